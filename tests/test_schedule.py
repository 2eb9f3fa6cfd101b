import pytest
from pydantic import BaseModel, ValidationError

from pacore_graph import ConfigError, Schedule, ScheduleError


@pytest.mark.parametrize(
    ("spec", "rounds"),
    [
        ("32,4", (32, 4)),
        (" 32 , 4 ", (32, 4)),
        ("[32, 4]", (32, 4)),
        ([32, 4], (32, 4)),
        ((3, 2), (3, 2)),
        (4, (4,)),
        ("low", (4,)),
        ("medium", (16,)),
        ("HIGH", (32, 4)),
    ],
)
def test_accepted_forms(spec, rounds):
    assert Schedule.parse(spec).rounds == rounds


def test_final_synthesis_round_is_implicit():
    schedule = Schedule.parse([4])
    assert schedule.all_rounds == (4, 1)
    assert schedule.total_trajectories == 5
    assert Schedule.parse("high").all_rounds == (32, 4, 1)
    assert Schedule.parse("high").total_trajectories == 37


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("", "empty"),
        ([], "empty"),
        ("0", "at least 1"),
        ("4,0", "at least 1"),
        ("-3", "at least 1"),
        ([2.5], "not an integer"),
        ("2.5", "not an integer"),
        ("abc", "not an integer"),
        ([True], "not an integer"),
        (None, "invalid schedule"),
        ("5000", "limit of 1024"),
    ],
)
def test_bad_schedules_name_the_value_and_the_valid_forms(spec, fragment):
    with pytest.raises(ScheduleError) as info:
        Schedule.parse(spec)
    message = str(info.value)
    assert fragment in message
    assert isinstance(info.value, ConfigError)
    if fragment != "limit of 1024":
        assert "'32,4'" in message and "'high'=[32, 4]" in message


def test_limits_can_be_raised_explicitly():
    assert Schedule.parse("5000", max_k=8192).rounds == (5000,)
    with pytest.raises(ScheduleError, match="3 rounds, more than the limit of 2"):
        Schedule.parse("1,1,1", max_rounds=2)


def test_offsets_give_each_trajectory_a_distinct_serial():
    schedule = Schedule.parse("3,2")
    assert [schedule.offset(r) for r in (1, 2, 3)] == [0, 3, 5]


def test_schedule_as_a_pydantic_field():
    class Spec(BaseModel):
        schedule: Schedule

    assert Spec(schedule="32,4").schedule.rounds == (32, 4)
    assert Spec.model_validate({"schedule": [2, 2]}).schedule.spec == "2,2"
    with pytest.raises(ValidationError, match="at least 1"):
        Spec(schedule="0")
