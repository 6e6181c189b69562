"""Extractive QA over a context longer than one window.  python examples/question_answering.py [ckpt]"""

from _checkpoint import checkpoint

import mlx_albert

qa = mlx_albert.pipeline("question-answering", checkpoint("for_question_answering"))
context = "ALBERT shares the weights of one transformer layer across all of its blocks. " * 8
answers = qa(question="What does ALBERT share?", context=context, top_k=2, max_seq_len=64, doc_stride=16)
for answer in answers if isinstance(answers, list) else [answers]:
    print(f"{answer['score']:.4f}  {answer['answer']!r} at characters {answer['start']}-{answer['end']}")
