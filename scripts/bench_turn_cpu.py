"""CPU per shop or support turn in one process, without HTTP: the turn's own cost, side by side.

    PYTHONPATH=src .venv/bin/python scripts/bench_turn_cpu.py shop --turns 400
    PYTHONPATH=/tmp/base/src .venv/bin/python scripts/bench_turn_cpu.py support --turns 400   # another checkout

The demo store (``--products``) and the homestay desk are built on a fresh ``CONCIERGE_HOME`` with the
load test's canned instant models (``scripts/load_test.py --hub instant``), then the load test's own
conversations run one turn after another: shop conversations of three turns, support conversations
of two or three. After a warm-up, the process CPU time (``time.process_time``: every thread) over
``--turns`` turns is printed per turn. Compare checkouts by alternating runs on the same machine.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["shop", "support"])
    parser.add_argument("--turns", type=int, default=400)
    parser.add_argument("--warm-up", type=int, default=40, help="turns run before the measured ones")
    parser.add_argument("--products", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    os.environ["CONCIERGE_HOME"] = tempfile.mkdtemp(prefix="concierge-turn-cpu-")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import load_test  # noqa: PLC0415 - the load test's canned hub and conversations

    from concierge.server import build_demo_services  # noqa: PLC0415 - after CONCIERGE_HOME is set

    hub = load_test.InstantHub()
    services = build_demo_services(hub, n_products=args.products, n_shoppers=max(20, args.products // 10), warm=False)
    rng = random.Random(args.seed)
    if args.kind == "shop":
        shop = services.shop
        shop.assistant(services.tenant, services.catalog)

        def conversation() -> int:
            cid = None
            script = rng.choice(load_test.SHOP_SCRIPTS)
            for text in script:
                turn = shop.prepare(services.tenant, text, conversation_id=cid)
                cid = shop.answer(turn).conversation_id
            return len(script)
    else:
        support = services.support
        support.domain(services.support_domain)
        guests = load_test.homestay_guests()

        def conversation() -> int:
            cid = None
            script = load_test.support_script(rng.choice(guests), rng)
            for text in script:
                cid = support.turn(text, conversation_id=cid, tenant=services.tenant).conversation_id
            return len(script)

    def run(n: int) -> int:
        done = 0
        while done < n:
            done += conversation()
        return done

    run(args.warm_up)
    t0 = time.process_time()
    done = run(args.turns)
    ms = (time.process_time() - t0) * 1000 / done
    print(f"{args.kind}: {done} turns, {ms:.2f} ms CPU per turn")
    return 0


if __name__ == "__main__":
    sys.exit(main())
