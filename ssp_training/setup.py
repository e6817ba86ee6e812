"""ament_python build of ssp_training (also pip-installable on machines without ROS)."""

from glob import glob

from setuptools import find_packages, setup

package_name = "ssp_training"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(include=[package_name, f"{package_name}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        (f"share/{package_name}/configs", glob("configs/*.yaml")),
    ],
    install_requires=["setuptools", "ssp_perception", "numpy", "opencv-python", "torch",
                      "torchvision", "timm", "kornia", "pyyaml", "tqdm", "matplotlib",
                      "rosbags", "tensorboard", "onnx", "onnxruntime"],
    extras_require={"test": ["pytest"]},
    zip_safe=True,
    maintainer="ssp_perception maintainers",
    maintainer_email="maintainers@ssp-perception.dev",
    description="Training, KD, dataset tools, evaluation and export for ssp_perception.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "ssp_data = ssp_training.console:ssp_data",
            "ssp_train = ssp_training.console:ssp_train",
            "ssp_eval = ssp_training.console:ssp_eval",
            "ssp_export = ssp_training.console:ssp_export",
        ],
    },
)
