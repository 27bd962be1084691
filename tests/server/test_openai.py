"""krasis serve driven by the official `openai` Python client (and raw HTTP / curl where the client
would hide what is tested): greedy output equal to transformers' reference, chat and completions,
streaming, stop sequences, usage and the prefix cache, seeds, logprobs, reasoning_content, every error
as the client's exception type, concurrency with an early disconnect, the queue limit, and a short soak
whose RSS must not grow. Usage: test_openai.py KRASIS_BINARY"""
import json
import os
import subprocess
import sys
import threading
import time

import openai

from common import MODEL, ROOT, SANITIZED, Server, check, summary

REF = json.load(open(os.path.join(MODEL, "reference.json")))
THINK_TEMPLATE = os.path.join(ROOT, "tests", "server", "think_template.jinja")


def client(srv, key="none", **kw):
    return openai.OpenAI(base_url=srv.base, api_key=key, max_retries=0, timeout=60, **kw)


def expect_error(exc_type, fn, status, what, contains=None):
    try:
        fn()
    except exc_type as e:
        ok = check(e.status_code == status, f"{what}: status {e.status_code}, want {status}")
        body = e.body if isinstance(e.body, dict) else {}
        if ok and contains:
            check(contains in str(e), f"{what}: message mentions {contains!r}: {e}")
        check(isinstance(body, dict) and "message" in body and "type" in body, f"{what}: OpenAI error shape: {e.body}")
        return e
    except Exception as e:  # noqa: BLE001
        check(False, f"{what}: raised {type(e).__name__} {e}, want {exc_type.__name__}")
        return None
    check(False, f"{what}: no error raised")
    return None


def test_greedy_reference(c):
    for g in REF["greedy"]:
        r = c.completions.create(model="tiny-moe", prompt=g["prompt"], temperature=0, max_tokens=48)
        check(r.choices[0].text == g["output_text"], f"greedy '{g['prompt']}': {r.choices[0].text!r} != reference")
        check(r.usage.prompt_tokens == len(g["prompt_ids"]), f"prompt_tokens {r.usage.prompt_tokens}")
        check(r.usage.completion_tokens == 48 and r.choices[0].finish_reason == "length", "48 tokens, finish length")
        # the same prompt as token ids
        r2 = c.completions.create(model="tiny-moe", prompt=g["prompt_ids"], temperature=0, max_tokens=48)
        check(r2.choices[0].text == g["output_text"], "a token-list prompt gives the same text")
        check(r2.usage.prompt_tokens_details.cached_tokens == len(g["prompt_ids"]) - 1,
              f"the repeated prompt is cached: {r2.usage.prompt_tokens_details.cached_tokens}")
        # streamed: the same text, chunk by chunk
        parts, fin = [], None
        for ch in c.completions.create(model="tiny-moe", prompt=g["prompt"], temperature=0, max_tokens=48, stream=True):
            if ch.choices:
                parts.append(ch.choices[0].text)
                fin = ch.choices[0].finish_reason or fin
        check("".join(parts) == g["output_text"] and fin == "length", "streamed completion equals the reference")


def test_chat(c):
    msgs = [{"role": "system", "content": "You are a poet."}, {"role": "user", "content": "Speak of the sea."}]
    r = c.chat.completions.create(model="tiny-moe", messages=msgs, temperature=0, max_tokens=24)
    m = r.choices[0].message
    check(r.object == "chat.completion" and m.role == "assistant", "chat completion shape")
    check(isinstance(m.content, str) and len(m.content) > 0, f"chat content: {m.content!r}")
    check(r.choices[0].finish_reason in ("stop", "length"), "finish_reason")
    u = r.usage
    check(u.total_tokens == u.prompt_tokens + u.completion_tokens and u.completion_tokens <= 24, f"usage {u}")
    # content as an array of text parts renders the same prompt
    parts = [{"role": "system", "content": [{"type": "text", "text": "You are "}, {"type": "text", "text": "a poet."}]},
             {"role": "user", "content": [{"type": "text", "text": "Speak of the sea."}]}]
    r2 = c.chat.completions.create(model="tiny-moe", messages=parts, temperature=0, max_tokens=24)
    check(r2.choices[0].message.content == m.content and r2.usage.prompt_tokens == u.prompt_tokens,
          "content-part arrays give the same answer")
    # streaming with usage: same text, role first, usage chunk last
    chunks = list(c.chat.completions.create(model="tiny-moe", messages=msgs, temperature=0, max_tokens=24, stream=True,
                                            stream_options={"include_usage": True}))
    check(chunks[0].choices[0].delta.role == "assistant", "first delta has the role")
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    check(text == m.content, f"streamed chat equals non-streamed: {text!r} vs {m.content!r}")
    fins = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    check(fins == [r.choices[0].finish_reason], f"one finish_reason chunk: {fins}")
    check(chunks[-1].usage is not None and not chunks[-1].choices and chunks[-1].usage.completion_tokens == u.completion_tokens,
          "the last chunk carries usage")
    check(all(ch.usage is None for ch in chunks[:-1]), "only the last chunk has usage")
    # without include_usage: no usage chunk
    chunks = list(c.chat.completions.create(model="tiny-moe", messages=msgs, temperature=0, max_tokens=4, stream=True))
    check(all(ch.usage is None for ch in chunks) and chunks[-1].choices, "no usage chunk unless asked")
    # max_completion_tokens is honoured
    r3 = c.chat.completions.create(model="tiny-moe", messages=msgs, temperature=0, max_completion_tokens=3)
    check(r3.usage.completion_tokens == 3 and r3.choices[0].finish_reason == "length", "max_completion_tokens")
    # unknown fields are ignored, as OpenAI does
    r4 = c.chat.completions.create(model="tiny-moe", messages=msgs, temperature=0, max_tokens=3,
                                   extra_body={"some_future_field": {"x": 1}})
    check(r4.choices[0].message.content == r3.choices[0].message.content, "unknown fields ignored")


def test_stop(c):
    g = REF["greedy"][0]
    want = g["output_text"].split("VINCENTIO")[0]
    r = c.completions.create(model="tiny-moe", prompt=g["prompt"], temperature=0, max_tokens=48, stop=["VINCENTIO", "zzz"])
    check(r.choices[0].text == want and r.choices[0].finish_reason == "stop", f"stop list: {r.choices[0].text!r}")
    r = c.completions.create(model="tiny-moe", prompt=g["prompt"], temperature=0, max_tokens=48, stop="VINCENTIO")
    check(r.choices[0].text == want, "stop string")
    text = "".join(ch.choices[0].text for ch in c.completions.create(
        model="tiny-moe", prompt=g["prompt"], temperature=0, max_tokens=48, stop="VINCENTIO", stream=True) if ch.choices)
    check(text == want, f"stop while streaming: {text!r}")


def test_sampling(c):
    msgs = [{"role": "user", "content": "Tell me a story."}]
    kw = dict(model="tiny-moe", messages=msgs, max_tokens=24, temperature=1.0, top_p=0.95)
    a = c.chat.completions.create(seed=42, **kw).choices[0].message.content
    b = c.chat.completions.create(seed=42, **kw).choices[0].message.content
    d = c.chat.completions.create(seed=7, **kw).choices[0].message.content
    check(a == b, "the same seed gives the same text")
    check(a != d, "another seed gives another text")
    r = c.chat.completions.create(seed=1, presence_penalty=1.0, frequency_penalty=0.5,
                                  extra_body={"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1}, **kw)
    check(r.usage.completion_tokens > 0, "penalties, top_k, min_p accepted")


def test_prefix_cache(c):
    system = "You are a careful narrator of old stories. " * 12
    m1 = [{"role": "system", "content": system}, {"role": "user", "content": "Begin."}]
    r1 = c.chat.completions.create(model="tiny-moe", messages=m1, temperature=0, max_tokens=8)
    m2 = m1 + [{"role": "assistant", "content": r1.choices[0].message.content}, {"role": "user", "content": "Go on."}]
    r2 = c.chat.completions.create(model="tiny-moe", messages=m2, temperature=0, max_tokens=8)
    cached = r2.usage.prompt_tokens_details.cached_tokens
    check(cached >= r1.usage.prompt_tokens - 1, f"the second turn reuses the first: {cached} cached of {r2.usage.prompt_tokens}")


def test_logprobs(c):
    r = c.chat.completions.create(model="tiny-moe", messages=[{"role": "user", "content": "Hello"}], temperature=0,
                                  max_tokens=6, logprobs=True, top_logprobs=3)
    lp = r.choices[0].logprobs.content
    check(len(lp) == r.usage.completion_tokens, f"one logprobs entry per token: {len(lp)}")
    check(all(len(t.top_logprobs) == 3 and t.logprob <= 0 for t in lp), "3 alternatives each, logprob <= 0")
    check(all(t.token == t.top_logprobs[0].token for t in lp), "greedy picks the most likely token")
    check("".join(t.token for t in lp) == r.choices[0].message.content, "tokens spell the content")
    chunks = list(c.chat.completions.create(model="tiny-moe", messages=[{"role": "user", "content": "Hello"}],
                                            temperature=0, max_tokens=6, logprobs=True, top_logprobs=1, stream=True))
    n = sum(len(ch.choices[0].logprobs.content) for ch in chunks if ch.choices and ch.choices[0].logprobs)
    check(n == 6, f"streamed logprobs cover every token: {n}")
    r = c.completions.create(model="tiny-moe", prompt="ROMEO:", temperature=0, max_tokens=5, logprobs=2)
    l = r.choices[0].logprobs
    check(len(l.tokens) == 5 and len(l.token_logprobs) == 5 and all(len(t) <= 2 for t in l.top_logprobs),
          "completions logprobs")
    # OpenAI's text_offset indexes prompt + completion: the first token starts where the prompt ends
    want = [len("ROMEO:")]
    for t in l.tokens[:-1]:
        want.append(want[-1] + len(t.encode()))
    check(l.text_offset == want, f"text_offset {l.text_offset}, want {want}")


def test_errors(srv, c):
    E = openai
    msgs = [{"role": "user", "content": "Hi"}]
    expect_error(E.BadRequestError, lambda: c.chat.completions.create(model="tiny-moe", messages=msgs, n=2), 400, "n=2", "n=1")
    expect_error(E.BadRequestError, lambda: c.chat.completions.create(model="tiny-moe", messages=msgs, temperature="hot"),
                 400, "temperature as a string", "temperature")
    expect_error(E.BadRequestError, lambda: c.chat.completions.create(model="tiny-moe", messages=msgs, temperature=5),
                 400, "temperature out of range", "temperature")
    expect_error(E.BadRequestError, lambda: c.chat.completions.create(model="tiny-moe", messages="hello"), 400,
                 "messages as a string", "messages")
    expect_error(E.BadRequestError, lambda: c.chat.completions.create(model="tiny-moe", messages=msgs, max_tokens=-1),
                 400, "negative max_tokens", "max_tokens")
    expect_error(E.BadRequestError, lambda: c.chat.completions.create(model="tiny-moe", messages=msgs, stop=[1, 2]),
                 400, "stop of numbers", "stop")
    expect_error(E.BadRequestError, lambda: c.completions.create(model="tiny-moe", prompt=[99999]), 400,
                 "token id out of range", "99999")
    e = expect_error(E.BadRequestError, lambda: c.completions.create(model="tiny-moe", prompt="to be " * 1100), 400,
                     "prompt longer than the context", "1024")
    check(e is not None and e.code == "context_length_exceeded", "context_length_exceeded code")
    expect_error(E.NotFoundError, lambda: c.models.retrieve("no-such-model"), 404, "unknown model")
    check(c.models.retrieve("tiny-moe").id == "tiny-moe", "models.retrieve of the served model")
    # raw bodies the client would not send
    for body, what, param in [(b"{not json", "body not JSON", None), (b"[1,2]", "body not an object", None),
                              (b'{"model":"x"}', "missing messages", "messages"),
                              (b'{"messages":[{"content":"hi"}]}', "message without role", "messages[0].role"),
                              (b'{"messages":[{"role":"user","content":5}]}', "content a number", "messages[0].content"),
                              (b'{"messages":[],"stream":true}', "empty messages", "messages"),
                              (b'{"messages":[{"role":"user","content":"x"}],"stream":"yes"}', "stream a string", "stream"),
                              (b'{"messages":[{"role":"user","content":"x"}],"chat_template_kwargs":[]}', "kwargs", "chat_template_kwargs"),
                              (b"\xff\xfe", "bad UTF-8", None), (b"", "empty body", None)]:
        status, _, out = srv.raw("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        err = json.loads(out).get("error", {}) if out.startswith(b"{") else {}
        check(status == 400 and err.get("type") == "invalid_request_error" and err.get("param") == param,
              f"{what}: {status} {out[:200]!r}")
    status, _, out = srv.raw("POST", "/v1/completions", b'{"prompt": 12}')
    check(status == 400 and b"prompt" in out, f"prompt of the wrong type: {status}")
    status, h, out = srv.raw("GET", "/v1/chat/completions")
    check(status == 405 and "POST" in h.get("Allow", "") and b'"error"' in out, f"wrong method: {status} {h}")
    status, _, out = srv.raw("DELETE", "/health")
    check(status == 405, f"DELETE /health: {status}")
    status, _, out = srv.raw("GET", "/v2/nothing")
    check(status == 404 and json.loads(out)["error"]["code"] == "not_found", f"unknown route: {status}")
    big = b'{"messages":[{"role":"user","content":"' + b"a" * 20000 + b'"}]}'
    status, _, out = srv.raw("POST", "/v1/chat/completions", big)
    check(status == 413 and b"16384" in out, f"body over --max-body: {status} {out[:120]!r}")
    # chunked upload over the limit (no Content-Length to reject early)
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    conn.request("POST", "/v1/chat/completions", body=iter([big[:10000], big[10000:]]), encode_chunked=True,
                 headers={"Transfer-Encoding": "chunked"})
    r = conn.getresponse()
    check(r.status == 413, f"chunked body over the limit: {r.status}")
    conn.close()
    status, _, _ = srv.raw("GET", "/health")
    check(status == 200, "still healthy after the errors")


def test_metrics(srv):
    status, h, out = srv.raw("GET", "/metrics")
    text = out.decode()
    check(status == 200 and h.get("Content-Type", "").startswith("text/plain"), "metrics content type")
    for name in ["krasis_requests_total", "krasis_generation_tokens_total", "krasis_prefill_tokens_per_second",
                 "krasis_decode_tokens_per_second", "krasis_queue_depth", "krasis_kv_cache_tokens_used",
                 "krasis_prompt_tokens_cached_total"]:
        check(f"\n{name} " in text, f"metric {name}")
    check(srv.metric("krasis_generation_tokens_total") > 0, "tokens counted")


def test_curl_sse(srv):
    body = json.dumps({"model": "tiny-moe", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5,
                       "temperature": 0, "stream": True, "stream_options": {"include_usage": True}})
    out = subprocess.run(["curl", "-sS", "-N", "-i", "--max-time", "30", "-H", "Content-Type: application/json",
                          "-d", body, f"http://127.0.0.1:{srv.port}/v1/chat/completions"],
                         capture_output=True, timeout=60).stdout.decode()
    head, _, events = out.partition("\r\n\r\n")
    check(head.startswith("HTTP/1.1 200") and "content-type: text/event-stream" in head.lower(), f"SSE head: {head}")
    check(events.endswith("data: [DONE]\n\n"), f"ends with data: [DONE]: {events[-40:]!r}")
    frames = events.split("\n\n")[:-1]
    check(all(f.startswith("data: ") and "\n" not in f for f in frames), "every event is one data: line")
    objs = [json.loads(f[6:]) for f in frames[:-1]]
    check(len(objs) >= 3 and all(o["object"] == "chat.completion.chunk" for o in objs), "chunks parse as JSON")
    check(objs[-1]["usage"]["completion_tokens"] == 5, "usage in the last chunk")


def stream_completion(srv, prompt, results, i, disconnect_after=None):
    try:
        c = client(srv)
        text = ""
        stream = c.completions.create(model="tiny-moe", prompt=prompt, temperature=0, max_tokens=48, stream=True)
        for k, ch in enumerate(stream):
            if ch.choices:
                text += ch.choices[0].text
            if disconnect_after is not None and k >= disconnect_after:
                stream.response.close()
                break
        results[i] = text
    except Exception as e:  # noqa: BLE001
        results[i] = e


def test_concurrency(srv):
    refs = REF["greedy"]
    n = 6
    results = [None] * (n + 1)
    threads = [threading.Thread(target=stream_completion, args=(srv, refs[i % len(refs)]["prompt"], results, i))
               for i in range(n)]
    threads.insert(1, threading.Thread(target=stream_completion, args=(srv, refs[0]["prompt"], results, n, 2)))
    cancelled0 = srv.metric("krasis_generations_cancelled_total")
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i in range(n):
        want = refs[i % len(refs)]["output_text"]
        check(results[i] == want, f"parallel client {i}: {results[i]!r:.80}")
    check(isinstance(results[n], str) and len(results[n]) < len(refs[0]["output_text"]), "the early leaver got a prefix")
    # a client that goes away mid-stream stops its generation well before max_tokens
    before = srv.metric("krasis_generation_tokens_total")
    res = [None]
    c = client(srv)
    stream = c.completions.create(model="tiny-moe", prompt="ROMEO:", temperature=0, max_tokens=900, stream=True,
                                  extra_body={"ignore_eos": True})
    for k, _ in enumerate(stream):
        if k >= 2:
            break
    stream.response.close()
    t0 = time.time()
    r = c.completions.create(model="tiny-moe", prompt="ROMEO:", temperature=0, max_tokens=2)
    res[0] = r.choices[0].text
    used = srv.metric("krasis_generation_tokens_total") - before
    check(used < 600, f"the disconnected stream stopped early: {used:.0f} tokens generated of 900")
    check(srv.metric("krasis_generations_cancelled_total") >= cancelled0 + 2, "cancellations counted")
    check(time.time() - t0 < 30, "the next request was served promptly")


def test_secured(krasis):
    """--api-key, --queue 0 (one running, none waiting), a thinking template."""
    srv = Server(krasis, "--api-key", "sekrit", "--queue", "0", "--chat-template", THINK_TEMPLATE, "--model-name", "think")
    try:
        msgs = [{"role": "user", "content": "Hi"}]
        expect_error(openai.AuthenticationError, lambda: client(srv, "wrong").chat.completions.create(
            model="think", messages=msgs), 401, "wrong API key")
        status, _, out = srv.raw("GET", "/v1/models")
        check(status == 401 and json.loads(out)["error"]["code"] == "invalid_api_key", f"missing API key: {status}")
        check(srv.raw("GET", "/health")[0] == 200, "/health needs no key")
        c = client(srv, "sekrit")
        check(c.models.list().data[0].id == "think", "--model-name")
        r = c.chat.completions.create(model="think", messages=msgs, temperature=0, max_tokens=8,
                                      extra_body={"chat_template_kwargs": {"enable_thinking": True}})
        m = r.choices[0].message
        reasoning = (m.model_extra or {}).get("reasoning_content")
        check(reasoning and not m.content, f"thinking: the answer is reasoning_content: {reasoning!r} / {m.content!r}")
        r = c.chat.completions.create(model="think", messages=msgs, temperature=0, max_tokens=8,
                                      extra_body={"chat_template_kwargs": {"enable_thinking": False}})
        m = r.choices[0].message
        check(m.content and not (m.model_extra or {}).get("reasoning_content"), f"not thinking: content {m.content!r}")
        chunks = list(c.chat.completions.create(model="think", messages=msgs, temperature=0, max_tokens=8, stream=True,
                                                extra_body={"chat_template_kwargs": {"enable_thinking": True}}))
        rs = "".join((ch.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for ch in chunks if ch.choices)
        check(rs == reasoning, f"streamed reasoning_content: {rs!r}")
        # queue limit: one long generation runs, the next request is refused with 503
        stream = c.completions.create(model="think", prompt="ROMEO:", temperature=0, max_tokens=900, stream=True,
                                      extra_body={"ignore_eos": True})
        next(iter(stream))
        expect_error(openai.InternalServerError, lambda: c.completions.create(model="think", prompt="x", max_tokens=1),
                     503, "queue full", "busy")
        stream.response.close()
        ok = False
        for _ in range(100):  # the slot frees at the cancelled stream's next token
            try:
                c.completions.create(model="think", prompt="x", max_tokens=1)
                ok = True
                break
            except openai.InternalServerError:
                time.sleep(0.05)
        check(ok, "after the stream is closed the server takes requests again")
    finally:
        srv.stop()


def test_soak(srv, c):
    """Bounded: 120 mixed requests (40 under ASan); RSS after them within a few MiB of RSS after a warm-up."""
    def round_(i):
        if i % 4 == 0:
            c.completions.create(model="tiny-moe", prompt="It is", temperature=0, max_tokens=4)
        elif i % 4 == 1:
            list(c.chat.completions.create(model="tiny-moe", messages=[{"role": "user", "content": f"n{i}"}],
                                           max_tokens=4, stream=True, seed=i, logprobs=True, top_logprobs=2))
        elif i % 4 == 2:
            srv.raw("POST", "/v1/chat/completions", b"{bad")
        else:
            srv.raw("GET", "/metrics")
    warm, count = (12, 40) if SANITIZED else (40, 120)  # ASan is ~5x slower; its leak check covers the rest
    for i in range(warm):
        round_(i)
    rss0 = srv.rss_kib()
    for i in range(count):
        round_(i)
    rss1 = srv.rss_kib()
    if SANITIZED:
        print(f"soak: RSS {rss0} -> {rss1} KiB (not checked under ASan: its quarantine holds freed memory)")
    else:
        check(rss1 - rss0 < 4096, f"RSS does not grow over the soak: {rss0} -> {rss1} KiB")


def timed(f, *args):
    t = time.time()
    f(*args)
    print(f"  {f.__name__}: {time.time() - t:.1f} s", flush=True)


def main():
    krasis = sys.argv[1]
    t0 = time.time()
    srv = Server(krasis, "--queue", "16", "--max-body", "16384")
    try:
        c = client(srv)
        check([m.id for m in c.models.list().data] == ["tiny-moe"], "models.list")
        for t in [test_greedy_reference, test_chat, test_stop, test_sampling, test_prefix_cache, test_logprobs]:
            timed(t, c)
        timed(test_errors, srv, c)
        timed(test_curl_sse, srv)
        timed(test_concurrency, srv)
        timed(test_soak, srv, c)
        timed(test_metrics, srv)
    finally:
        srv.stop()
    timed(test_secured, krasis)
    print(f"server tests took {time.time() - t0:.1f} s")
    return summary("test_openai")


if __name__ == "__main__":
    sys.exit(main())
