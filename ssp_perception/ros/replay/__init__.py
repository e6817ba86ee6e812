"""ssp_replay: run a rosbag2 through the real ssp_node over ROS topics and report on it.

``config`` (ReplayConfig, node parameters per mode), ``bag`` (rosbags reading and writing),
``driver`` (one node fed and observed over real topics), ``run`` (one replay, end to end),
``report`` (metrics, plots, video, report files) and ``cli`` (the ``ssp_replay`` command).
"""
