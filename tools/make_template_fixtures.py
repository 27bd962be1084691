#!/usr/bin/env python3
"""Reference renders of chat templates, for tests/test_template.c.

The oracle is Hugging Face transformers' own rendering path (render_jinja_template: jinja2's
ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks, loopcontrols, its tojson,
raise_exception, strftime_now, dict and namespace), fed as apply_chat_template feeds it: messages
with null fields dropped, tools, add_generation_prompt, bos/eos tokens and template kwargs.

Writes tests/reference/templates/:
  conversations.json   the message lists and tool sets the cases refer to by name
  <template>.json      per template: where its source is, versions, and the cases
                       {conversation, tools, add_generation_prompt, kwargs, bos_token, eos_token,
                        expected | error: {type, message}}
  features.json        small templates written here that exercise one Jinja feature each
  deepseek-v2-chat.jinja  the DeepSeek-V2-Chat template, written from ../shared/specs/models.md §9
Templates from ../shared/data are referenced by path, never copied.

Pinned: jinja2 3.1.6, transformers 5.24.0 (checked below). Run: python3 tools/make_template_fixtures.py
"""
import json
import os
import sys

import jinja2
import transformers
from transformers.utils.chat_template_utils import (
    _alias_reasoning_fields,
    _compile_jinja_template,
    _normalize_chat_messages,
    _plain_template_data,
    render_jinja_template,
)

JINJA2_VERSION = "3.1.6"
TRANSFORMERS_VERSION = "5.24.0"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
OUT = os.path.join(ROOT, "tests", "reference", "templates")

# Written from ../shared/specs/models.md §9 ("{bos} + system -> {content}\n\n; user -> User: {content}\n\n;
# assistant -> Assistant: {content}<｜end▁of▁sentence｜>; generation prompt 'Assistant:'"), in the form it is
# published in DeepSeek-V2-Chat's tokenizer_config.json.
DEEPSEEK_V2_CHAT = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ 'User: ' + message['content'] + '\\n\\n' }}{% elif message['role'] == 'assistant' %}"
    "{{ 'Assistant: ' + message['content'] + eos_token }}{% elif message['role'] == 'system' %}"
    "{{ message['content'] + '\\n\\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "{{ 'Assistant:' }}{% endif %}"
)

DS_BOS, DS_EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Zürich"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
CALC_TOOL = {
    "type": "function",
    "function": {
        "name": "calculate",
        "description": "Evaluate an arithmetic expression.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
    },
}
TOOLS = {"weather": [WEATHER_TOOL], "two": [WEATHER_TOOL, CALC_TOOL]}


def call(name, args, as_string=False, cid="call_1", wrapped=True):
    a = json.dumps(args, ensure_ascii=False) if as_string else args
    if not wrapped:
        return {"name": name, "arguments": a}
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": a}}


SYS = {"role": "system", "content": "You are a helpful assistant."}
U1 = {"role": "user", "content": "Hello!"}
A1 = {"role": "assistant", "content": "Hi! How can I help you today?"}
U2 = {"role": "user", "content": "What is 2 + 2?"}

CONVERSATIONS = {
    "user": [U1],
    "system_user": [SYS, U1],
    "system_only": [SYS],
    "multi_turn": [SYS, U1, A1, U2],
    "multi_turn_no_system": [U1, A1, U2],
    "ends_with_assistant": [U1, A1],
    "two_systems": [SYS, {"role": "system", "content": "Answer briefly."}, U1],
    "reasoning_content": [
        U2,
        {"role": "assistant", "content": "2 + 2 = 4.", "reasoning_content": "Simple arithmetic: two plus two."},
        {"role": "user", "content": "And 3 + 3?"},
    ],
    "reasoning_last": [U2, {"role": "assistant", "content": "4", "reasoning_content": "\nadd them\n"}],
    "think_in_content": [
        U2,
        {"role": "assistant", "content": "<think>\nTwo plus two.\n</think>\n\nIt is 4."},
        {"role": "user", "content": "Thanks"},
    ],
    "think_in_content_last": [U2, {"role": "assistant", "content": "<think>\nTwo plus two.\n</think>\n\nIt is 4."}],
    "thinking_alias": [U2, {"role": "assistant", "content": "4", "thinking": "old-style field"}],
    "tool_call_dict": [
        SYS,
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call("get_weather", {"city": "Paris", "unit": "celsius"})]},
        {"role": "tool", "content": '{"temperature": 21, "sky": "clear"}', "tool_call_id": "call_1", "name": "get_weather"},
        {"role": "assistant", "content": "It is 21 °C and clear in Paris."},
    ],
    "tool_call_string": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [call("get_weather", {"city": "Paris"}, as_string=True)]},
        {"role": "tool", "content": "21 degrees", "tool_call_id": "call_1"},
    ],
    "tool_call_with_content": [
        {"role": "user", "content": "Compute 6*7 and tell me the weather in Oslo."},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                call("calculate", {"expression": "6*7"}, cid="c1"),
                call("get_weather", {"city": "Oslo", "unit": "fahrenheit"}, cid="c2"),
            ],
        },
        {"role": "tool", "content": "42", "tool_call_id": "c1"},
        {"role": "tool", "content": "50 F, rain", "tool_call_id": "c2"},
        {"role": "assistant", "content": "6*7 = 42 and it rains in Oslo (50 F)."},
        {"role": "user", "content": "Thanks!"},
    ],
    "tool_call_numbers": [
        {"role": "user", "content": "numbers"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                call("f", {"i": 3, "f": 1.5, "tiny": 1e-07, "round": 100.0, "big": 1e22, "neg": -0.25, "t": True,
                           "n": None, "list": [1, "two", [3.0]], "obj": {"k": "välue", "e": {}}, "s": "a\"b\\c\nd"}),
            ],
        },
    ],
    "tool_call_flat": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "", "tool_calls": [call("calculate", {"expression": "1+1"}, wrapped=False)]},
        {"role": "tool", "content": "2"},
    ],
    "tool_response_last": [
        {"role": "user", "content": "Weather in Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [call("get_weather", {"city": "Rome"})]},
        {"role": "tool", "content": "sunny", "tool_call_id": "call_1"},
    ],
    "parts_user": [{"role": "user", "content": [{"type": "text", "text": "Describe "}, {"type": "text", "text": "this."}]}],
    "parts_all": [
        {"role": "system", "content": [{"type": "text", "text": "Be terse."}]},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello."}]},
    ],
    "parts_image": [
        {"role": "user", "content": [{"type": "image", "image": "<img>"}, {"type": "text", "text": "What is this?"}]}
    ],
    "unicode": [
        {"role": "system", "content": "Réponds en français. 日本語も。"},
        {"role": "user", "content": "Emoji 😀🚀, ümlaut, Ελληνικά, עברית, \u00a0nbsp, tab\there"},
        {"role": "assistant", "content": "Très bien ✓"},
        {"role": "user", "content": "中文：你好，世界！"},
    ],
    "empty_content": [{"role": "system", "content": ""}, {"role": "user", "content": ""}, {"role": "assistant", "content": ""},
                      {"role": "user", "content": "?"}],
    "whitespace": [
        {"role": "system", "content": "  padded system  \n"},
        {"role": "user", "content": "\n\n  lots of space \t \n"},
        {"role": "assistant", "content": "\nanswer\n\n"},
        {"role": "user", "content": " last "},
    ],
    "jinja_like_text": [
        {"role": "user", "content": "Print {{ messages }} and {% if x %} literally, 'quotes' \"too\" \\ back"},
    ],
    "named": [{"role": "user", "content": "Hi", "name": "alice"}, {"role": "assistant", "content": "Hello alice", "name": "bot"}],
    "prefix_assistant": [U1, {"role": "assistant", "content": "Sure, ", "prefix": True}],
    "long_multi": [
        SYS,
        *[
            m
            for i in range(6)
            for m in ({"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"})
        ],
        {"role": "user", "content": "final"},
    ],
    "tool_content_mapping": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": None, "tool_calls": [call("calculate", {"expression": "1"})]},
        {"role": "tool", "content": [{"type": "text", "text": "1"}]},
    ],
}

# (conversation, tools) pairs that every template renders, each with and without the generation prompt.
BASE = [(c, None) for c in CONVERSATIONS] + [
    ("user", "weather"),
    ("system_user", "two"),
    ("multi_turn", "two"),
    ("tool_call_dict", "weather"),
    ("tool_call_with_content", "two"),
    ("tool_response_last", "weather"),
    ("tool_call_string", "weather"),
]

# kwargs the templates read, tried on a few conversations.
KWARG_CONVS = ["user", "multi_turn", "reasoning_content", "reasoning_last", "think_in_content_last", "prefix_assistant"]
KWARGS_BY_TEMPLATE = {
    "qwen": [{"enable_thinking": False}, {"enable_thinking": True}],
    "glm": [{"enable_thinking": False}, {"enable_thinking": True}],
    "dsv31": [{"thinking": True}, {"thinking": False}, {"enable_thinking": True}],
    "r1distill": [{"enable_thinking": False}, {"enable_thinking": True}],
    "llama": [
        {"date_string": "01 Jan 2025"},
        {"tools_in_user_message": False},
        {"builtin_tools": ["brave_search", "wolfram_alpha", "code_interpreter"]},
    ],
}

TEMPLATES = [
    # id, source, bos, eos, kwargs family
    ("GLM-4.6", {"shared": "chat-templates/GLM-4.6.jinja"}, None, "<|endoftext|>", "glm"),
    ("Kimi-K2-Instruct", {"shared": "chat-templates/Kimi-K2-Instruct.jinja"}, "[BOS]", "[EOS]", None),
    ("moonshotai-Kimi-K2", {"shared": "chat-templates/moonshotai-Kimi-K2.jinja"}, "[BOS]", "[EOS]", None),
    ("Qwen-Qwen2.5-7B-Instruct", {"shared": "chat-templates/Qwen-Qwen2.5-7B-Instruct.jinja"}, None, "<|im_end|>", None),
    ("Qwen-Qwen3-0.6B", {"shared": "chat-templates/Qwen-Qwen3-0.6B.jinja"}, None, "<|im_end|>", "qwen"),
    ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", {"shared": "chat-templates/deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"},
     DS_BOS, DS_EOS, "r1distill"),
    ("deepseek-ai-DeepSeek-V3.1", {"shared": "chat-templates/deepseek-ai-DeepSeek-V3.1.jinja"}, DS_BOS, DS_EOS, "dsv31"),
    ("deepseek-ai-DeepSeek-V3", {"shared": "chat-templates/deepseek-ai-DeepSeek-V3.jinja"}, DS_BOS, DS_EOS, None),
    ("llama-cpp-deepseek-r1", {"shared": "chat-templates/llama-cpp-deepseek-r1.jinja"}, DS_BOS, DS_EOS, None),
    ("meta-llama-Llama-3.1-8B-Instruct", {"shared": "chat-templates/meta-llama-Llama-3.1-8B-Instruct.jinja"},
     "<|begin_of_text|>", "<|eot_id|>", "llama"),
    ("tokenizer-qwen3", {"shared": "tokenizers/qwen3/tokenizer_config.json", "field": "chat_template"}, None, "<|im_end|>",
     "qwen"),
    ("tokenizer-deepseek-v3", {"shared": "tokenizers/deepseek-v3/tokenizer_config.json", "field": "chat_template"},
     DS_BOS, DS_EOS, None),
    ("deepseek-v2-chat", {"file": "deepseek-v2-chat.jinja", "written_from_spec": "../shared/specs/models.md section 9"},
     DS_BOS, DS_EOS, None),
]


def template_source(src):
    if "shared" in src:
        path = os.path.join(SHARED, src["shared"])
        if "field" in src:
            with open(path, encoding="utf-8") as f:
                return json.load(f)[src["field"]]
        with open(path, encoding="utf-8") as f:
            return f.read()
    with open(os.path.join(OUT, src["file"]), encoding="utf-8") as f:
        return f.read()


def render_case(source, conv, tools, agp, kwargs, bos, eos):
    """What apply_chat_template renders (its steps, without a tokenizer object), and the context."""
    messages = _normalize_chat_messages(conv)
    template_kwargs = {}
    if bos is not None:
        template_kwargs["bos_token"] = bos
    if eos is not None:
        template_kwargs["eos_token"] = eos
    template_kwargs.update(kwargs)
    try:
        rendered, _ = render_jinja_template(conversations=[messages], tools=tools, chat_template=source,
                                            add_generation_prompt=agp, **template_kwargs)
        out = {"expected": rendered[0]}
    except Exception as e:  # the template refused the input: record what it said
        out = {"error": {"type": type(e).__name__, "message": str(e)}}
    # The same through the compiled template with the context spelled out: they must agree.
    ctx = {"messages": _alias_reasoning_fields(_plain_template_data(messages)), "tools": tools, "documents": None,
           "add_generation_prompt": agp, **template_kwargs}
    try:
        direct = {"expected": _compile_jinja_template(source).render(**ctx)}
    except Exception as e:
        direct = {"error": {"type": type(e).__name__, "message": str(e)}}
    assert direct == out, (direct, out)
    return out


def template_cases(tid, source, bos, eos, family):
    cases = []

    def add(conv, tools, agp, kwargs, b=bos, e=eos):
        case = {"conversation": conv, "tools": tools, "add_generation_prompt": agp, "kwargs": kwargs,
                "bos_token": b, "eos_token": e}
        case.update(render_case(source, CONVERSATIONS[conv], TOOLS[tools] if tools else None, agp, kwargs, b, e))
        cases.append(case)

    for conv, tools in BASE:
        for agp in (False, True):
            add(conv, tools, agp, {})
    for kw in KWARGS_BY_TEMPLATE.get(family, []):
        for conv in KWARG_CONVS:
            for agp in (False, True):
                add(conv, "weather" if family == "llama" else None, agp, kw)
    # no special tokens at all, and unusual ones
    add("multi_turn", None, True, {}, None, None)
    add("multi_turn", None, True, {}, "<s>", "</s>")
    return cases


# Small templates, each exercising Jinja features the real ones use or might: rendered by the same
# environment, so their expected output is jinja2's.
FEATURES = [
    # whitespace control
    ("ws_trim_blocks", "{% if true %}\nA\n{% endif %}\nB\n", {}),
    ("ws_lstrip", "x\n    {% if true %}\n    y\n    {% endif %}\nz", {}),
    ("ws_lstrip_plus", "x\n    {%+ if true %}y{% endif %}\n", {}),
    ("ws_minus", "a   {{- 'b' -}}   c\n  {%- if true -%}  d  {%- endif -%}  e", {}),
    ("ws_block_plus_end", "{% if true +%}\nkept newline{% endif %}", {}),
    ("ws_comment", "a\n  {# comment #}\nb {#- c -#} c\n{#+ x #}\nd", {}),
    ("ws_var_no_lstrip", "  {{ 'v' }}\n  {% set x = 1 %}\nend", {}),
    ("ws_trailing_newline", "line\n", {}),
    ("ws_two_trailing_newlines", "line\n\n", {}),
    ("ws_crlf", "a\r\n{% if true %}\r\nb\r\n{% endif %}\r\nc", {}),
    ("ws_tabs", "\t{% if true %}\tx{% endif %}\t\n\t{%- if true %}y{% endif %}", {}),
    ("ws_not_line_start", "text {% if true %}x{% endif %} more", {}),
    # literals and printing
    ("print_values", "{{ 1 }} {{ 1.0 }} {{ 1.5e3 }} {{ 1e-5 }} {{ 0.1 + 0.2 }} {{ 10 / 4 }} {{ 10 // 4 }} {{ -7 // 2 }} "
     "{{ -7 % 3 }} {{ 7 % -3 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 1e16 }} {{ 123456789012345678 }} {{ 1_000 }} {{ 0x1F }}",
     {}),
    ("print_floats", "{% for f in fs %}{{ f }} {% endfor %}",
     {"fs": [0.1, 1 / 3, 2.5, 100.0, 1e-4, 1e-5, 123456789.123, 1e15, 1e16, -0.0, 3.0e-10, 5e300]}),
    ("print_repr", "{{ d }} | {{ l }} | {{ t }} | {{ (1,) }} | {{ () }} | {{ none }} | {{ true }} | {{ False }} | {{ [] }} | {{ {} }}",
     {"d": {"a": 1, "b": [1, 2.0, None, True, "x"], "c": {"n": "it's"}}, "l": ["a'b", 'a"b', "a'\"b", "\n\t\\", "é😀"],
      "t": None}),
    ("print_repr_escapes", "{{ ['\\x00\\x1f\\x7f', '\\u00a0\\u200b\\u2028', '\\xe9'] }}", {}),
    ("string_escapes", "{{ 'a\\nb\\tc\\\\d\\'e\\\"f\\x41\\u00e9\\U0001F600\\101\\q' }}|{{ \"double 'q'\" }}|{{ 'adj' 'acent' }}", {}),
    ("concat_tilde", "{{ 'a' ~ 1 ~ none ~ true ~ [1] ~ undefined_var ~ 2.0 }}", {}),
    # operators and precedence
    ("precedence", "{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 2 ** 3 ** 2 }} {{ -2 ** 2 }} {{ not true or true }} "
     "{{ not (true or true) }} {{ 1 if false else 2 if true else 3 }} {{ 'a' ~ 'b' + 'c' }} {{ 10 - 2 - 3 }}", {}),
    ("compare", "{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 1 == 1.0 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }} {{ 'ab' in 'cabd' }} "
     "{{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 3 not in [1] }} {{ true == 1 }} {{ none == none }} {{ 'x' != 'y' }}", {}),
    ("and_or_values", "{{ 0 or 'x' }} {{ 'a' and 'b' }} {{ '' and 'b' }} {{ none or [] }} {{ (1 and 0) }}", {}),
    ("cond_no_else", "[{{ 'yes' if false }}]", {}),
    ("list_ops", "{{ [1] + [2, 3] }} {{ 'ab' * 3 }} {{ [0] * 2 }} {{ (1, 2) + (3,) }}", {}),
    # subscripts and slices
    ("subscripts", "{{ s[0] }} {{ s[-1] }} {{ s[1:3] }} {{ s[::-1] }} {{ s[::2] }} {{ l[1:] }} {{ l[:-1] }} {{ l[::-1] }} "
     "{{ l[5:] }} {{ l[-10:2] }} {{ d['k'] }} {{ d.k }} {{ l.0 }} {{ s[10] }}|{{ d.missing }}|{{ d['missing'] }}",
     {"s": "héllo", "l": [1, 2, 3], "d": {"k": "v"}}),
    ("dict_method_vs_key", "{{ d.items is defined }} {{ d['get'] is defined }} {{ d.get('x', 'dflt') }} {{ d.get('y') }}",
     {"d": {"x": 1}}),
    # statements
    ("for_loop_vars", "{% for x in l %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}"
     "{{ loop.first }}{{ loop.last }}{{ loop.length }}[{{ loop.previtem }}|{{ loop.nextitem }}] {% endfor %}",
     {"l": ["a", "b", "c"]}),
    ("for_else", "{% for x in [] %}x{% else %}empty{% endfor %} {% for x in [1] %}{{ x }}{% else %}no{% endfor %}", {}),
    ("for_filter", "{% for x in range(10) if x % 3 == 0 %}{{ x }}:{{ loop.index }}/{{ loop.length }} {% endfor %}", {}),
    ("for_unpack", "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}{% for a, b in [[1, 2], (3, 4)] %}{{ a + b }}{% endfor %}",
     {"d": {"x": 1, "y": [2]}}),
    ("for_dict_and_string", "{% for k in d %}{{ k }}{% endfor %} {% for c in 'héj' %}[{{ c }}]{% endfor %}", {"d": {"b": 1, "a": 2}}),
    ("for_scoping", "{% set x = 'outer' %}{% for i in [1, 2] %}{{ x }}{% set x = i %}{{ x }}{% endfor %}{{ x }}", {}),
    ("for_nested_loop", "{% for a in [1, 2] %}{% for b in 'xy' %}{{ loop.index }}{{ b }}{% endfor %}{{ loop.index }} {% endfor %}", {}),
    ("break_continue", "{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i > 4 %}{% break %}{% endif %}{{ i }}{% endfor %}", {}),
    ("loop_cycle", "{% for i in range(5) %}{{ loop.cycle('a', 'b') }}{% endfor %}", {}),
    ("if_elif_else", "{% for n in [0, 1, 2, 3] %}{% if n == 0 %}zero{% elif n == 1 %}one{% elif n == 2 %}two{% else %}many{% endif %} {% endfor %}", {}),
    ("set_tuple_and_block", "{% set a, b = 1, 2 %}{{ a }}{{ b }} {% set blk %}inner {{ a }}{% endset %}[{{ blk }}] "
     "{% set up | upper %}shout{% endset %}{{ up }}", {}),
    ("namespace", "{% set ns = namespace(count=0, items=[]) %}{% for i in [1, 2, 3] %}{% set ns.count = ns.count + i %}{% endfor %}"
     "{{ ns.count }} {{ ns.items }} {% set ns2 = namespace({'a': 1}, b=2) %}{{ ns2.a }}{{ ns2.b }}", {}),
    ("macro_defaults", "{% macro greet(name, greeting='Hello', punct='!') %}{{ greeting }}, {{ name }}{{ punct }}{% endmacro %}"
     "{{ greet('Ann') }} {{ greet('Bob', 'Hi') }} {{ greet('Cy', punct='?') }} {{ greet(name='Di') }}", {}),
    ("macro_scope", "{% set g = 'global' %}{% macro m(x) %}{{ x }}-{{ g }}{% set g = 'local' %}-{{ g }}{% endmacro %}{{ m(1) }}-{{ g }}", {}),
    ("macro_varargs", "{% macro m(a) %}{{ a }}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1, 2, 3, k='v') }}", {}),
    ("macro_call_block", "{% macro box(title) %}[{{ title }}: {{ caller() }}]{% endmacro %}{% call box('T') %}body {{ 1 + 1 }}{% endcall %}", {}),
    ("macro_call_block_args", "{% macro each(xs) %}{% for x in xs %}{{ caller(x) }}{% endfor %}{% endmacro %}"
     "{% call(item) each([1, 2]) %}<{{ item }}>{% endcall %}", {}),
    ("macro_returns_string", "{% macro m() %}  text  {% endmacro %}[{{ m() | trim }}] {{ m().strip().upper() }} {{ m() is string }}", {}),
    ("filter_block", "{% filter upper %}abc {{ 'def' }}{% endfilter %}", {}),
    ("with_block", "{% with a = 1, b = 2 %}{{ a + b }}{% endwith %}[{{ a }}]", {}),
    ("generation_block", "{% for m in messages %}{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}",
     {"messages": [{"content": "x"}, {"content": "y"}]}),
    ("print_tag", "{% print 'printed' %}", {}),
    # tests
    ("tests", "{{ x is defined }} {{ y is undefined }} {{ none is none }} {{ 'a' is string }} {{ 1 is number }} {{ 1.5 is float }} "
     "{{ 1 is integer }} {{ true is boolean }} {{ true is number }} {{ {} is mapping }} {{ [] is iterable }} {{ 'a' is iterable }} "
     "{{ y is iterable }} {{ {} is sequence }} {{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 1 is eq 1 }} "
     "{{ 2 is gt 1 }} {{ 'ab' is lower }} {{ 'AB' is upper }} {{ 1 is in [1] }} {{ x is true }} {{ x is false }} "
     "{{ none is sameas none }} {{ x is callable }} {{ x is not none }} {{ 1 is equalto 1 }}", {"x": True}),
    # filters
    ("filters_string", "{{ '  hi  ' | trim }}|{{ 'xxhixx' | trim('x') }}|{{ 'hello world' | title }}|{{ 'hELLO' | capitalize }}|"
     "{{ 'Up' | upper }}{{ 'Lo' | lower }}|{{ 'aaa' | replace('a', 'b', 2) }}|{{ 'abc' | reverse }}|{{ 'x' | center(5) }}|"
     "{{ 'one two  three' | wordcount }}|{{ '<a href=\"x\">&\\'' | e }}|{{ 'a\\nb\\n\\nc' | indent(2) }}|"
     "{{ 'a\\nb' | indent(2, first=true) }}|{{ 'a\\n\\nb' | indent(2, blank=true) }}|{{ 42 | string }}|{{ 'it''s' | safe }}", {}),
    ("filters_list", "{{ l | length }} {{ l | first }} {{ l | last }} {{ l | join(',') }} {{ l | sort }} {{ l | sort(reverse=true) }} "
     "{{ l | unique | list }} {{ l | reverse | list }} {{ l | min }} {{ l | max }} {{ l | sum }} {{ l | list }} "
     "{{ l | batch(2) | list }} {{ l | select('odd') | list }} {{ l | reject('odd') | list }} {{ l | map('string') | join }} "
     "{{ 'abc' | list }} {{ l | count }}",
     {"l": [3, 1, 2, 3]}),
    ("filters_attr", "{{ ps | map(attribute='n') | join(' ') }} {{ ps | selectattr('ok') | map(attribute='n') | list }} "
     "{{ ps | rejectattr('ok') | map(attribute='n') | list }} {{ ps | selectattr('n', 'equalto', 'b') | list | length }} "
     "{{ ps | sort(attribute='age') | map(attribute='n') | join }} {{ ps | map(attribute='missing', default='d') | list }} "
     "{{ ps | join(', ', attribute='n') }} {{ ps | sum(attribute='age') }} {{ ps | map(attribute='info.x') | list }}",
     {"ps": [{"n": "b", "ok": True, "age": 30, "info": {"x": 1}}, {"n": "a", "ok": False, "age": 20, "info": {"x": 2}}]}),
    ("filters_dict", "{{ d | dictsort }} {{ d | dictsort(by='value') }} {{ d | items | list }} {{ d | length }} {{ d.keys() | list }} "
     "{{ d.values() | list }} {{ d.items() }}", {"d": {"b": 2, "a": 3, "C": 1}}),
    ("filters_default", "{{ x | default('d') }} {{ none | default('d') }} {{ '' | default('d', true) }} {{ y | d('z') }} "
     "{{ x | default }}|", {"y": 0}),
    ("filters_numbers", "{{ '42' | int }} {{ '3.7' | int }} {{ 'x' | int }} {{ 'x' | int(7) }} {{ 3.9 | int }} {{ '2.5' | float }} "
     "{{ 5 | float }} {{ -3 | abs }} {{ 2.5 | round }} {{ 3.5 | round }} {{ 2.567 | round(2) }} {{ 2.1 | round(method='ceil') }} "
     "{{ 7 | round }} {{ '%s-%d' | format('a', 3) }} {{ '%s' % 'pct' }}", {}),
    # int() of a float string goes through float: nan and inf give the default (fuzzer-found: no UB cast)
    ("filters_numbers_float_strings", "{{ 'nan' | int }} {{ 'inf' | int(3) }} {{ '-inf' | int }} {{ '1e5' | int }} "
     "{{ '-2.5e1' | int }} {{ ' 7.9 ' | int }} {{ '0x10' | int(7) }} {{ '0x1p3' | int(7) }} {{ '0x10' | float(7.5) }}",
     {}),
    ("filters_tojson", "{{ v | tojson }}\n{{ v | tojson(indent=2) }}\n{{ v | tojson(separators=(',', ':')) }}\n"
     "{{ v | tojson(sort_keys=true) }}\n{{ v | tojson(ensure_ascii=true) }}\n{{ 'x<y>&\\'' | tojson }}\n{{ [] | tojson(indent=2) }}"
     "{{ {} | tojson(indent=4) }}{{ none | tojson }}",
     {"v": {"s": "é\"\\\n\t\u0001😀", "i": 1, "f": 2.0, "g": 1e-7, "b": False, "n": None, "l": [1, [], {}], "z": {"y": 1, "a": 2}}}),
    # methods
    ("methods_str", "{{ s.startswith('He') }} {{ s.endswith(('x', 'd!')) }} {{ s.split() }} {{ s.split('l') }} {{ s.split('l', 1) }} "
     "{{ s.rsplit('l', 1) }} {{ s.strip('H!') }} {{ s.lstrip('eH') }} {{ s.rstrip('!d') }} {{ s.lower() }} {{ s.upper() }} "
     "{{ s.title() }} {{ 'hELLO wORLD'.capitalize() }} {{ s.replace('l', 'L') }} {{ s.find('o') }} {{ s.rfind('o') }} "
     "{{ s.count('l') }} {{ '-'.join(['a', 'b']) }} {{ '{} and {}'.format(1, 'x') }} {{ '{0}{name}'.format('a', name='b') }} "
     "{{ '12'.isdigit() }} {{ 'ab'.isalpha() }} {{ ' '.isspace() }} {{ 'a\\nb\\r\\nc'.splitlines() }} {{ s.removeprefix('He') }} "
     "{{ '  x '.strip() }}|{{ ''.split(',') }} {{ 'a,,b'.split(',') }} {{ '  a  b '.split() }} {{ '  a  b '.rsplit(None, 1) }} "
     "{{ 'ab'.center(6, '*') }} {{ 'x'.ljust(3, '.') }}", {"s": "Hello World!"}),
    ("methods_list_dict", "{{ l.index(2) }} {{ l.count(1) }} {{ d.get('a') }} {{ d.get('zz', 5) }} {{ d['a'] }}", {"l": [1, 2, 1], "d": {"a": 1}}),
    ("globals", "{{ range(3) | list }} {{ range(1, 7, 2) | list }} {{ dict(a=1) }} {{ namespace(a=1).a }} {{ range(5, 0, -2) | list }}", {}),
    ("undefined_ops", "[{{ u }}] [{{ u | string }}] [{{ u | length }}] {{ u is defined }} {{ none.attr }}|{{ 'str'.nosuch }}|"
     "{% for x in u %}never{% endfor %}{{ 'a' in u }}", {}),
    ("raise_in_macro", "{% macro check(x) %}{% if not x %}{{ raise_exception('bad value: ' ~ x) }}{% endif %}ok{% endmacro %}"
     "{{ check(1) }}{{ check(0) }}", {}),
    # errors at render time
    ("error_undefined_attr", "{{ nosuch.attr }}", {}),
    ("error_add_types", "{{ 'a' + 1 }}", {}),
    ("error_call_undefined", "{{ nosuch() }}", {}),
    ("error_list_append", "{% set l = [] %}{% set _ = l.append(1) %}", {}),
    ("error_dict_update", "{% set d = {} %}{{ d.update({'a': 1}) }}", {}),
    ("error_unpack", "{% for a, b in [[1, 2, 3]] %}{% endfor %}", {}),
    ("error_tojson_generator", "{{ [1, 2] | map('string') | tojson }}", {}),
    ("error_items_non_mapping", "{{ [1] | items | list }}", {}),
    ("error_macro_too_many_args", "{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}", {}),
    ("error_div_zero", "{{ 1 // 0 }}", {}),
    ("error_ns_underscore", "{% set ns = namespace() %}{% set ns._x = 1 %}", {}),
    ("error_compare_types", "{{ 1 < 'a' }}", {}),
    # errors at parse time (TemplateSyntaxError / TemplateAssertionError)
    ("syntax_unclosed_if", "{% if x %}never closed", {}),
    ("syntax_unclosed_for", "line1\n{% for x in y %}\nline3", {}),
    ("syntax_unknown_tag", "a\n{% frobnicate %}", {}),
    ("syntax_bad_expression", "{{ 1 + }}", {}),
    ("syntax_unclosed_var", "{{ x ", {}),
    ("syntax_unclosed_comment", "{# never", {}),
    ("syntax_stray_endif", "{% endif %}", {}),
    ("syntax_unknown_filter", "\n\n{{ x | frobnicate }}", {}),
    ("syntax_unknown_test", "{{ x is frobnicated }}", {}),
    ("syntax_bad_bracket", "{{ (1, 2] }}", {}),
    ("syntax_break_outside_loop", "{% break %}", {}),
    ("syntax_assign_to_literal", "{% set 1 = 2 %}", {}),
    ("syntax_unterminated_string", "{{ 'abc }}", {}),
    ("syntax_else_twice", "{% if a %}{% else %}{% else %}{% endif %}", {}),
]


def render_feature(source, ctx):
    try:
        env_t = _compile_jinja_template(source)
    except Exception as e:
        return {"error": {"type": type(e).__name__, "message": str(e), "at": "parse"}}
    try:
        return {"expected": env_t.render(**ctx)}
    except Exception as e:
        return {"error": {"type": type(e).__name__, "message": str(e), "at": "render"}}


def dump(name, obj):
    with open(os.path.join(OUT, name), "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


def main():
    if jinja2.__version__ != JINJA2_VERSION or transformers.__version__ != TRANSFORMERS_VERSION:
        sys.exit(f"pinned jinja2 {JINJA2_VERSION} / transformers {TRANSFORMERS_VERSION}, found "
                 f"{jinja2.__version__} / {transformers.__version__}")
    if not os.path.isdir(SHARED):
        sys.exit(f"{SHARED} is missing: the real templates live there")
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "deepseek-v2-chat.jinja"), "w", encoding="utf-8") as f:
        f.write(DEEPSEEK_V2_CHAT)
    versions = {"jinja2": jinja2.__version__, "transformers": transformers.__version__,
                "python": sys.version.split()[0]}
    dump("conversations.json", {"conversations": CONVERSATIONS, "tools": TOOLS})
    index = []
    for tid, src, bos, eos, family in TEMPLATES:
        source = template_source(src)
        cases = template_cases(tid, source, bos, eos, family)
        dump(f"{tid}.json", {"template": src, "versions": versions, "cases": cases})
        n_err = sum("error" in c for c in cases)
        index.append(tid)
        print(f"{tid}: {len(cases)} cases ({n_err} expected errors)")
    feats = []
    for name, source, ctx in FEATURES:
        feats.append({"name": name, "source": source, "context": ctx, **render_feature(source, ctx)})
    dump("features.json", {"versions": versions, "cases": feats})
    dump("index.json", {"templates": index})
    print(f"features: {len(feats)} cases ({sum('error' in c for c in feats)} expected errors)")


if __name__ == "__main__":
    main()
