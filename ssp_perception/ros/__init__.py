"""The ROS 2 layer of ssp_perception: the only package that imports rclpy or ROS messages.

``node`` (ssp_node), ``params`` (typed configs -> ROS parameters), ``worker`` (one thread per
camera stream), ``conversions`` (messages <-> numpy), ``node_bench`` (node benchmarks) and
``replay/`` (ssp_replay: bag I/O, node driver, report, CLI).
"""
