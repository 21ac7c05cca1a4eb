"""The ROS 2 layer: the lifecycle perception node and what it needs (the only rclpy user).

* :mod:`.node`: ``perception_node`` (lifecycle transitions, topics, services, diagnostics)
* :mod:`.image`: ``sensor_msgs/Image`` / ``CompressedImage`` <-> numpy without cv_bridge
* :mod:`.goals`: goal validation and the active-goal book
* :mod:`.worker`: newest-frame mailbox and the inference thread
* :mod:`.messages`: results -> text4seg_msgs / vision_msgs / mask / overlay messages
* :mod:`.params`: parameter descriptors and validation
* :mod:`.diagnostics`: counters and ``/diagnostics``
* :mod:`.model_loader`: ``Segmenter.from_pretrained`` from the parameters
* :mod:`.goal_client`: ``text4seg-goal``, send a goal from the shell and print the answers
"""
