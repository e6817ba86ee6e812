"""ssp_perception.ros_names agrees with rclpy's own topic name validators."""

import pytest
from rclpy.exceptions import InvalidTopicNameException
from rclpy.validate_full_topic_name import validate_full_topic_name
from rclpy.validate_topic_name import validate_topic_name
from ssp_perception.ros_names import check_topic_name, name_problem

NAMES = ["/camera", "/camera/image_raw", "camera/labels", "/a_b/c9", "/_x", "/a__b", "~/x",
         "bad topic!!", "/a//b", "/a/", "/", "", "/1a", "a/1b", "/ä", "/cam-era", "/a.b",
         "~x", "//a"]


def _rcl_accepts(name: str, absolute: bool) -> bool:
    try:
        (validate_full_topic_name if absolute else validate_topic_name)(name)
    except InvalidTopicNameException:
        return False
    return True


@pytest.mark.parametrize("absolute", [True, False], ids=["fully_qualified", "relative"])
def test_same_verdict_as_rclpy(absolute):
    # rcl accepts '~x' and '//'-names before expansion; ours is stricter there, never laxer.
    lax_in_rcl = {"~x", "/a//b", "//a"} if not absolute else set()
    for name in NAMES:
        ours = name_problem(name, absolute) is None
        if name in lax_in_rcl:
            assert not ours, name
            continue
        assert ours == _rcl_accepts(name, absolute), name


def test_message_names_the_argument():
    with pytest.raises(ValueError, match=r"--topic-prefix 'bad topic!!' .*contains ' !'"):
        check_topic_name("bad topic!!", "--topic-prefix")
