"""``python -m crema ARGS`` is ``crema ARGS``; ``torchrun -m crema pretrain ...`` works too."""
import sys

from .cli import main

sys.exit(main())
