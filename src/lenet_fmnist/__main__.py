import sys

from lenet_fmnist.cli import main

sys.exit(main())
