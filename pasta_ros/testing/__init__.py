"""Scaffolding for tests, the ROS demo and the ROS benchmark: a ROS session with a leased
domain id and loopback-only discovery, output recorders, and the node arguments of the launch
file. Nothing on the runtime path (core, pipeline, node) imports it."""
