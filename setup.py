"""ament_python build of the ssp_perception ROS 2 package."""

from glob import glob

from setuptools import find_packages, setup

package_name = "ssp_perception"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(include=[package_name, f"{package_name}.*"]),
    package_data={package_name: ["weights/*.safetensors", "weights/*.json", "weights/*.md",
                                 "weights/*.yaml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        (f"share/{package_name}/launch", glob("launch/*.launch.py")),
        (f"share/{package_name}/config", glob("config/*.yaml") + glob("config/*.xml")),
    ],
    install_requires=["setuptools", "numpy", "opencv-python", "pillow", "torch", "torchvision",
                      "timm", "kornia", "safetensors", "pyyaml", "rosbags", "matplotlib", "tqdm"],
    extras_require={"test": ["pytest"], "onnx": ["onnx", "onnxruntime"]},
    zip_safe=True,
    maintainer="ssp_perception maintainers",
    maintainer_email="maintainers@ssp-perception.dev",
    description="Temporally consistent semantic segmentation for UAVs (SSP / KD-SSP).",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "ssp_node = ssp_perception.console:ssp_node",
            "ssp_replay = ssp_perception.console:ssp_replay",
            "ssp_bench = ssp_perception.console:ssp_bench",
        ],
    },
)
