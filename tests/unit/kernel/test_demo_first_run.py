"""What `make run` prints last: the commands to ask more, each runnable as printed."""

from __future__ import annotations

import ast
import json
import shlex

from tools.cli.demo import DEMO_QUESTION, ask_more_commands


def test_the_three_commands_ask_the_same_question_with_rag():
    cmds = dict(ask_more_commands("http://127.0.0.1:8000", "adept-k3y", "bundled:smollm2-135m-instruct"))
    assert set(cmds) == {"curl", "openai", "adept ask"}
    curl = shlex.split(cmds["curl"])
    body = json.loads(curl[curl.index("-d") + 1])
    assert body["rag"] is True and body["messages"][0]["content"] == DEMO_QUESTION
    assert "Authorization: Bearer adept-k3y" in curl
    script = cmds["openai"].split("\n", 1)[1].rsplit("\nEOF", 1)[0]
    ast.parse(script)  # valid Python as printed
    assert "extra_body={'rag': True}" in script and "base_url='http://127.0.0.1:8000/v1'" in script
    assert shlex.split(cmds["adept ask"].split("#")[0]) == ["adept", "ask", DEMO_QUESTION]
