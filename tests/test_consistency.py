"""One checkpoint, one answer, whatever the door: for every task of the registry, the Python
pipeline, the command line, the server and (where it applies) an exported function give the same
answers for the same inputs."""

import asyncio
import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from conftest import close_json
from test_pipelines import EMBEDDING, NER_LABELS, REORDERED, _head_checkpoint

import mlx_albert
from mlx_albert.cli import configure_parser, main
from mlx_albert.tasks import TASKS, pipeline

TINY = Path(__file__).parent.parent / "models" / "tiny-albert"
INPUTS = {
    "fill-mask": ["The [MASK] sat on the mat.", "A [MASK] ran far away."],
    "text-classification": ["a good cat", {"text": "Where is Maria?", "text_pair": "Maria is in Paris."}],
    "token-classification": ["Maria lives in Paris.", "John met Ann in New York."],
    "question-answering": [
        {"question": "Where is the cat?", "context": "The cat sat on the mat in the garden."}
    ],
    "multiple-choice": [{"question": "Fire plus water", "choices": ["goes out", "grows", "sings"]}],
    "feature-extraction": ["a cat", "the sea again"],
    "embed": ["a cat", "the sea again and again", "rivers"],
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("doors")
    return {
        "fill-mask": TINY,
        "text-classification": _head_checkpoint(root / "cls", "for_sequence_classification", num_labels=3),
        "token-classification": _head_checkpoint(
            root / "ner", "for_token_classification", num_labels=5, id_to_label=NER_LABELS
        ),
        "question-answering": _head_checkpoint(root / "qa", "for_question_answering", scale=3.0),
        "multiple-choice": _head_checkpoint(root / "mc", "for_multiple_choice"),
        "feature-extraction": TINY,
        "embed": TINY,
    }


def _cli(capsys, tmp_path, task, folder) -> list:
    path = tmp_path / f"{task.command}.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in INPUTS[task.name]))
    code = main([task.command, "--model", folder, "--file", path, "--json", "--allow-untrained-head"])
    out = capsys.readouterr().out
    assert code == 0, task.name
    return [json.loads(line) for line in out.splitlines()]


def test_every_task_answers_alike_through_every_door(folders, tmp_path, capsys):
    """The CLI reads the same inputs from a file and batches them as the pipeline does: the same
    arithmetic, so the same bits; the server may batch requests together (REORDERED)."""
    commanded = [t for t in TASKS if t.command]
    assert {t.name for t in commanded} == set(INPUTS)  # a new task needs a row here
    answers = {}
    for task in commanded:
        pipe = pipeline(task.name, folders[task.name], allow_untrained_head=True)
        # the options the command sets by default (ner: aggregation "simple", fill-mask: top_k 5, ...)
        options = task.cli_options(configure_parser().parse_args([task.command, "--model", "m"]))
        want = pipe(INPUTS[task.name], **options)
        want = json.loads(json.dumps(want, default=lambda a: np.asarray(a).tolist()))
        assert _cli(capsys, tmp_path, task, folders[task.name]) == (
            [[round(x, 6) for x in v] for v in want] if task.name == "embed" else want
        ), task.name
        answers[task.name] = (want, options)
    _through_the_service(commanded, folders, answers)
    pytest.importorskip("starlette")
    from test_serve import Server

    args = [a for t in commanded if t.route for a in ("--model", f"{t.command}={folders[t.name]}")]
    server = Server(tmp_path, *args, "--model", f"embed={TINY}")
    try:
        for task in commanded:
            if task.route:
                want, options = answers[task.name]
                request = {"model": task.command, "inputs": INPUTS[task.name], **options}
                status, body, _ = server.call(task.route, request)
                assert status == 200 and close_json(body, want, REORDERED), task.name
        status, body, _ = server.call("/v1/embeddings", {"model": "embed", "input": INPUTS["embed"]})
        got = np.array([d["embedding"] for d in body["data"]])
        assert status == 200 and np.abs(got - np.array(answers["embed"][0])).max() <= EMBEDDING
    finally:
        server.stop()


def _through_the_service(commanded, folders, answers):
    """A door without HTTP: the service admits the same request bodies and answers them alike
    (its errors typed, not HTTP statuses)."""
    from mlx_albert.service import GONE, ModelNotFound, RequestError, Service, Settings
    from mlx_albert.service.models import load_models

    specs = {t.command: str(folders[t.name]) for t in commanded if t.route} | {"embed": str(TINY)}
    service = Service(load_models(specs), Settings())

    async def go():
        await service.batcher.start()
        try:
            for task in commanded:
                if task.route:
                    want, options = answers[task.name]
                    body = {"model": task.command, "inputs": INPUTS[task.name], **options}
                    got = json.loads(json.dumps(await service.run(service.admit(task, body))))
                    assert close_json(got, want, REORDERED), task.name
            job = service.admit_embeddings({"model": "embed", "input": INPUTS["embed"]})
            got = np.array((await service.run(job)).vectors)
            assert np.abs(got - np.array(answers["embed"][0])).max() <= EMBEDDING

            async def gone():
                return True

            assert await service.run(job, gone) is GONE  # a client that left gets no work done
        finally:
            await service.batcher.stop()

    asyncio.run(go())
    task = commanded[0]
    with pytest.raises(ModelNotFound, match="no model 'nope'"):
        service.admit(task, {"model": "nope", "inputs": ["a"]})
    with pytest.raises(RequestError) as e:
        service.admit(task, {"model": task.command, "inputs": ["a"], "colour": 1})
    assert e.value.param == "colour"


@pytest.mark.parametrize("name", ["text-classification", "embed"])
def test_exported_functions_give_the_pipelines_answers(name, folders, tmp_path):
    """Sentence vectors, and classification scores (softmax of the exported logits)."""
    folder, texts = folders[name], [t for t in INPUTS[name] if isinstance(t, str)]
    out = tmp_path / f"{name}.mlxfn"
    assert (
        main(["export", "--model", folder, "--task", name, "--output", out, "--batch", str(len(texts))]) == 0
    )
    tok = mlx_albert.AlbertTokenizer.from_pretrained(folder)
    batch = tok(texts, padding="max_length", max_length=128, truncation=True, return_tensors="mlx")
    (got,) = mx.import_function(str(out))(
        batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    )
    want = pipeline(name, folder)(texts, **({"top_k": None} if name != "embed" else {}))
    if name == "embed":
        assert np.abs(np.array(got) - want).max() <= EMBEDDING
        return
    probs = np.array(mx.softmax(got, axis=-1))
    labels = mlx_albert.load(folder).config.id_to_label
    for row, answer in zip(probs, want, strict=True):
        by_label = {labels.get(i, f"LABEL_{i}"): p for i, p in enumerate(row)}
        assert all(abs(by_label[a["label"]] - a["score"]) <= REORDERED for a in answer)


def test_readme_option_tables_are_the_declarations():
    """README's tables are generated: a declaration changed without them fails here (regenerate with
    mlx_albert.tasks.option_docs())."""
    from mlx_albert.tasks import option_docs

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    begin = "<!-- option tables: generated by mlx_albert.tasks.option_docs() -->\n"
    block = readme[readme.index(begin) + len(begin) : readme.index("\n<!-- end of option tables")]
    assert block == option_docs()


def test_every_declared_option_reaches_every_door():
    """Each declared option is a flag of its command with the declared default (or the CLI's own),
    a keyword of its pipeline function, and a field the server checks: a value of the wrong type
    is refused naming the option, the declared default is accepted."""
    import inspect

    from mlx_albert.tasks import Limits, RequestError

    parser = configure_parser()
    limits = Limits(max_input_chars=1000, max_length=128, vocab_size=30)
    for task in TASKS:
        defaults = vars(parser.parse_args([task.command, "--model", "m"])) if task.command else {}
        for o in task.options:
            if o.flag is not None:  # lists are appended to, from None
                assert defaults[o.dest] == (None if o.kind is list else o.flag_default), (task.name, o.name)
            assert o.name in inspect.signature(_function_of(task)).parameters
            if o.server:
                assert o.name in task.request_options
                bad = [1.5] if o.kind is not list else 7
                with pytest.raises(RequestError) as e:
                    task.check_options({o.name: bad}, limits)
                assert e.value.param == o.name and o.name in str(e.value)
                if not isinstance(o.default, tuple):
                    task.check_options({o.name: o.default}, limits)  # the default is in range


def _function_of(task):
    import mlx_albert.tasks as registry

    return getattr(registry, task.name.replace("-", "_"))


def test_register_adds_a_task_to_every_door(monkeypatch):
    """A task registered from outside the package gets its pipeline name, command and route; a name
    another task holds is refused."""
    import mlx_albert.tasks as registry
    from mlx_albert.tasks import Task, get, register

    class Shout(Task):
        name, command, route, help = "shout", "shout", "/v1/shout", "shout texts back"
        needs_head = False

        def predict(self, model, tokenizer, inputs, **options):
            return [t.upper() for t in inputs]

    monkeypatch.setattr(registry, "TASKS", list(registry.TASKS))
    monkeypatch.setattr(registry, "_BY_NAME", dict(registry._BY_NAME))
    task = register(Shout())
    assert get("shout") is task and task in registry.TASKS
    assert "shout" in configure_parser()._subparsers._group_actions[0].choices
    assert pipeline("shout", mlx_albert.load(TINY), mlx_albert.AlbertTokenizer.from_pretrained(TINY))(
        ["a"]
    ) == ["A"]

    class Clash(Shout):
        name, command, route = "fill-mask", None, None

    with pytest.raises(ValueError, match="'fill-mask' is taken"):
        register(Clash())
