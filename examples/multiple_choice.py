"""Score the choices of a question.   python examples/multiple_choice.py [checkpoint]"""

from _checkpoint import checkpoint

import mlx_albert

choose = mlx_albert.pipeline("multiple-choice", checkpoint("for_multiple_choice"))
item = {"question": "You pour water on a fire, so the fire", "choices": ["goes out.", "grows.", "sings."]}
for choice in choose(item):
    print(f"{choice['score']:.4f}  {choice['choice']}")
