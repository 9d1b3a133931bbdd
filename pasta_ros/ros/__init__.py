"""The ROS 2 layer of pasta_ros (the only code that imports rclpy besides the tests).

node (pasta_node), params (declaration + validation), convert (messages <-> numpy), frames
(latest-frame slot), recalibration (hot recalibration + model store), diagnostics, clients
(`pasta recalibrate | echo | play`), process/testing/launch_args (running the node for tests,
the demo and the benchmark), bench (`pasta bench ros`). Importing this package imports nothing.
"""
