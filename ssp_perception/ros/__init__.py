"""The ROS 2 layer of ssp_perception: the only package that imports rclpy or ROS messages.

``node`` (ssp_node), ``params`` (typed configs -> ROS parameters), ``worker`` (one thread per
camera stream), ``input_qos`` (a stream's subscription, reliability following its publishers),
``frame_loss`` (frames that never arrived, from the stamps), ``conversions`` (messages <->
numpy), ``node_bench`` (node benchmarks), ``delivery`` (frame delivery between processes,
measured) and ``replay/`` (ssp_replay: bag I/O, node driver and process, report, CLI).
"""
