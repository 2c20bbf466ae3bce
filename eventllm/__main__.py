import sys

from eventllm.cli import main

sys.exit(main())
