"""The ROS 2 layer: the lifecycle perception node and what it needs (the only rclpy user).

* :mod:`.node`: ``perception_node`` (lifecycle transitions, parameters, wiring of the parts)
* :mod:`.lifecycle`: a lifecycle node whose change_state service refuses invalid transitions
* :mod:`.camera_input`: the camera subscription into the inference thread's mailbox
* :mod:`.goal_inputs`: goal topics and the private goal services (validate, prepare, book)
* :mod:`.publishing`: result publishers (segmentations, detections, mask, overlay)
* :mod:`.health`: the /diagnostics timer, camera-flow check and inference-thread watchdog
* :mod:`.image`: ``sensor_msgs/Image`` / ``CompressedImage`` <-> numpy without cv_bridge
* :mod:`.goals`: goal validation and the active-goal book
* :mod:`.worker`: newest-frame mailbox and the inference thread
* :mod:`.messages`: results -> text4seg_msgs / vision_msgs / mask / overlay messages
* :mod:`.params`: parameter descriptors and validation
* :mod:`.diagnostics`: counters and ``/diagnostics``
* :mod:`.model_loader`: ``Segmenter.from_pretrained`` from the parameters
* :mod:`.goal_client`: ``text4seg-goal``, send a goal from the shell and print the answers
"""
