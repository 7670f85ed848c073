"""OpenHands' stuck detector over our conversations: each scenario fires on its pattern, not on near misses."""

from __future__ import annotations

import json
from itertools import count

from swehero.agent.bash_session import completed_observation
from swehero.agent.loop import GIVE_UP, KEEP_GOING
from swehero.agent.runtime import CommandResult
from swehero.agent.stuck import is_stuck
from swehero.agent.tools import MULTIPLE_COMMANDS, error_observation

OPENING = [{"role": "system", "content": "You are OpenHands agent."}, {"role": "user", "content": "Fix the bug."}]
_ids = count()


def call(name: str, **arguments) -> dict:
    return {"id": f"call_{next(_ids)}", "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)}}


def bash(command: str, **arguments) -> dict:
    return call("execute_bash", command=command, **arguments)


def reply(*calls: dict, text: str | None = None) -> dict:
    message = {"role": "assistant", "content": text}
    return {**message, "tool_calls": list(calls)} if calls else message


def result(of: dict, content: str) -> dict:
    return {"role": "tool", "tool_call_id": of["id"], "name": of["function"]["name"], "content": content}


def ran(command: str, output: str = "", code: int = 0) -> str:
    return completed_observation(CommandResult(output, code, False, "/workspace", ""), command)


def step(a_call: dict, observation: str, text: str | None = None) -> list[dict]:
    """One reply with one call, and its result."""
    return [reply(a_call, text=text), result(a_call, observation)]


def steps(*pairs: tuple[dict, str]) -> list[dict]:
    return OPENING + [m for a_call, observation in pairs for m in step(a_call, observation)]


def keep_going(messages: list[dict]) -> dict:
    """The loop's answer to a reply without a call (`GIVE_UP` from the conversation's second user message on)."""
    asked = sum(m["role"] == "user" for m in messages)
    return {"role": "user", "content": KEEP_GOING + (GIVE_UP if asked >= 2 else "")}


def refused(messages: list[dict]) -> dict:
    """A reply the loop refused (e.g. arguments that are not JSON): only its error stays, as a user message."""
    separator = "\n\n" if messages[-1]["role"] == "user" else ""
    return {"role": "user", "content": separator + error_observation("Failed to parse tool call arguments: {")}


def monologue(*texts: str | None) -> list[dict]:
    """Replies without a call, each answered by the loop (an empty one is left out of the conversation)."""
    messages = list(OPENING)
    for text in texts:
        messages += [reply(text=text)] if text else []
        messages.append(keep_going(messages))
    return messages


def test_a_fresh_or_varied_conversation_is_not_stuck():
    assert not is_stuck(OPENING)
    assert not is_stuck(steps(*((bash(f"cat f{i}"), ran(f"cat f{i}")) for i in range(8))))


# scenario 1: the same action and observation four times

def test_same_command_and_exit_code_four_times_is_stuck():
    assert not is_stuck(steps(*[(bash("ls"), ran("ls", "a"))] * 3))
    assert is_stuck(steps(*[(bash("ls"), ran("ls", "a"))] * 4))


def test_command_outputs_are_compared_on_command_and_exit_code_only():
    assert is_stuck(steps(*((bash("date"), ran("date", f"12:0{i}")) for i in range(4))))


def test_same_command_with_different_exit_codes_is_not_stuck():
    assert not is_stuck(steps(*((bash("make"), ran("make", code=code)) for code in (0, 2, 0, 0))))


def test_still_running_command_has_no_exit_code():
    running = "\n[The command timed out after 5.0 seconds. You may wait longer to see additional output ...]"
    assert not is_stuck(steps(*[(bash("sleep 9", timeout=5), running)] * 3, (bash("sleep 9", timeout=5), ran("s"))))
    assert is_stuck(steps(*[(bash("sleep 9", timeout=5), running)] * 4))


def test_same_command_with_different_reply_text_is_not_the_same_action():
    pairs = [(bash("ls"), ran("ls"))] * 4
    messages = OPENING + [m for i, (c, o) in enumerate(pairs) for m in step(c, o, text=f"Try {i}.")]
    assert not is_stuck(messages)
    messages = OPENING + [m for c, o in pairs for m in step(c, o, text="Again.")]
    assert is_stuck(messages)


def test_reply_text_is_the_thought_of_its_first_call_only():
    def twice(text):  # two replies of two identical calls each: four calls in all
        messages = list(OPENING)
        for _ in range(2):
            first, second = bash("ls"), bash("ls")
            messages += [reply(first, second, text=text), result(first, ran("ls")), result(second, ran("ls"))]
        return messages
    assert is_stuck(twice(None)) and is_stuck(twice(""))
    assert not is_stuck(twice("Look."))


def test_a_timeout_makes_the_command_blocking_whatever_its_value():
    assert not is_stuck(steps(*((bash("ls", **({"timeout": 30} if i else {})), ran("ls")) for i in range(4))))
    assert is_stuck(steps(*((bash("ls", timeout=10 + i), ran("ls")) for i in range(4))))


def test_input_to_a_running_command_is_not_the_same_command():
    assert not is_stuck(steps(*((bash("y", is_input="true" if i else "false"), ran("y")) for i in range(4))))


def test_calls_of_the_last_reply_without_a_result_are_still_to_come():
    messages = steps(*[(bash("ls"), ran("ls"))] * 3)
    pending = bash("ls")
    assert not is_stuck(messages + [reply(pending)])
    assert is_stuck(messages + [reply(pending), result(pending, ran("ls"))])


def test_same_view_four_times_is_stuck_not_with_another_range():
    view = "Here's the result of running `cat -n` on /w/a.py:\n     1\tx = 1\n"
    assert is_stuck(steps(*[(call("str_replace_editor", command="view", path="/w/a.py"), view)] * 4))
    assert not is_stuck(steps(*((call("str_replace_editor", command="view", path="/w/a.py",
                                      view_range=[1, 1 + (i == 3)]), view) for i in range(4))))


def test_same_thought_four_times_is_stuck():
    logged = "Your thought has been logged."
    assert is_stuck(steps(*[(call("think", thought="Hmm."), logged)] * 4))
    assert not is_stuck(steps(*((call("think", thought=f"Hmm {i}."), logged) for i in range(4))))


# scenario 2: the same action three times, each an ErrorObservation

def test_same_action_with_three_errors_is_stuck():
    command = "ls\npwd"
    error = error_observation(MULTIPLE_COMMANDS.format(listed="(1) ls\n(2) pwd"))
    assert not is_stuck(steps(*[(bash(command), error)] * 2))
    assert is_stuck(steps(*[(bash(command), error)] * 3))
    view = call("str_replace_editor", command="view", path="/w/logo.png")
    assert is_stuck(steps(*[(view, error_observation("ERROR_BINARY_FILE"))] * 3))


def test_editor_errors_are_not_error_observations():
    edit = call("str_replace_editor", command="str_replace", path="/w/a.py", old_str="y", new_str="z")
    failed = "ERROR:\nNo replacement was performed, old_str `y` did not appear verbatim in /w/a.py."
    assert not is_stuck(steps(*[(edit, failed)] * 3))
    assert is_stuck(steps(*[(edit, failed)] * 4))  # scenario 1


def test_no_running_command_to_wait_for_is_a_command_output_not_an_error():
    empty = "ERROR: No previous running command to retrieve logs from."
    assert not is_stuck(steps(*[(bash(""), empty)] * 3))
    assert is_stuck(steps(*[(bash(""), empty)] * 4))


def test_refused_call_is_an_error_without_an_action():
    view = call("str_replace_editor", command="view", path="/w/logo")
    messages = steps((view, "Here's the result of running `cat -n` on /w/logo:\n     1\tx\n"),
                     *[(view, error_observation("ERROR_BINARY_FILE"))] * 2)
    assert not is_stuck(messages)  # the last three observations: two errors and a view
    assert is_stuck(messages + [refused(messages)])  # three actions alike, three errors


def test_refused_call_breaks_a_repetition():
    messages = steps(*[(bash("ls"), ran("ls"))] * 2)
    messages.append(refused(messages))
    messages += steps(*[(bash("ls"), ran("ls"))] * 2)[len(OPENING):]
    assert not is_stuck(messages)  # four times ls, but an error among the last four observations


# scenario 3: monologue

def test_same_reply_without_a_call_three_times_is_stuck():
    assert not is_stuck(monologue("I am done.", "I am done."))
    assert is_stuck(monologue("I am done.", "I am done.", "I am done."))  # the loop's answers are no observations
    assert not is_stuck(monologue("I am done.", "I am done!", "I am done."))


def test_empty_replies_the_loop_leaves_out_still_count():
    assert is_stuck(monologue(None, None, None))
    assert not is_stuck(monologue(None, "", "Hello."))


def test_an_observation_between_same_replies_is_not_a_monologue():
    messages = monologue("I am done.")
    messages += step(bash("ls"), ran("ls"))
    messages += [reply(text="I am done.")]
    messages.append(keep_going(messages))
    messages += [reply(text="I am done.")]
    messages.append(keep_going(messages))
    assert not is_stuck(messages)
    messages.append(refused(messages))  # an error between them is an observation too
    assert not is_stuck(messages + monologue("I am done.", "I am done.")[len(OPENING):])


# scenario 4: (action, observation) pairs alternating over six steps

def test_two_steps_alternating_three_times_is_stuck():
    a, b = (bash("ls"), ran("ls", "x")), (bash("cat x"), ran("cat x", "y"))
    assert not is_stuck(steps(a, b, a, b))
    assert not is_stuck(steps(b, a, b, a, b))
    assert is_stuck(steps(a, b, a, b, a, b))
    assert is_stuck(steps(b, a, b, a, b, a, b))


def test_alternation_broken_in_an_action_or_an_observation_is_not_stuck():
    a, b = (bash("ls"), ran("ls", "x")), (bash("cat x"), ran("cat x", "y"))
    assert not is_stuck(steps(a, b, a, b, a, (bash("cat y"), ran("cat y"))))
    assert not is_stuck(steps(a, b, a, b, a, (bash("cat x"), ran("cat x", code=1))))
    view = call("str_replace_editor", command="view", path="/w/a.py")
    assert not is_stuck(steps(a, (view, "v1"), a, (view, "v1"), a, (view, "v2")))
    assert is_stuck(steps(a, (view, "v1"), a, (view, "v1"), a, (view, "v1")))


def test_keep_going_answers_leave_recall_actions_the_detector_keeps():
    def cycles(n):  # a reply without a call, the loop's answer, a refused reply: n times
        messages = list(OPENING)
        for _ in range(n):
            messages.append(reply(text="Done."))
            messages.append(keep_going(messages))
            messages.append(refused(messages))
        return messages
    # the same reply and the same error four times, but OpenHands' actions alternate with the answers' recalls
    assert not is_stuck(cycles(4)) and not is_stuck(cycles(5))
    assert is_stuck(cycles(6))  # scenario 4: (recall, error), (reply, error) three times
