"""The paper's comparison on real data; see fairsk/benchmarks/reproduce.py.

    python benchmarks/reproduce.py [--quick] [--datasets ...] [--seeds ...] [--tolerances ...]

Same as ``python -m fairsk.benchmarks`` and the ``fairsk-reproduce`` command.
"""

from fairsk.benchmarks import main

if __name__ == "__main__":
    main()
