import sys

from eventllm.cli import main
from eventllm.distributed import end_rank

code = main()
end_rank(code)  # under torchrun: ends the rank here (see its docstring); otherwise it returns
sys.exit(code)
