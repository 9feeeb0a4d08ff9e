"""Which rank a hang waits for: follow who waits for whom, one process group at a time.

Collective sequence numbers count per process group, and the pipeline's
point-to-point sends and receives are not collectives at all, so ranks are
only compared with members of the same group (or the two ends of the same
pipeline channel). Each comparison gives wait-for edges:

- collective: a rank blocked in collective #N of a group (enqueued N, completed
  less) waits for every member of that group whose last enqueued collective
  there is below N;
- pipeline receive: a rank that posted receive #N on a channel and has not got
  its data waits for the sender if the sender posted fewer than N sends there;
- pipeline send: a rank that posted more sends on a channel than the receiver
  posted receives may be blocked in that send (gloo waits for the receiver),
  so it waits for the receiver, unless the receiver itself waits for it.

Following the edges from the blocked ranks ends at the rank(s) that wait for
nobody: the culprit. When several remain (a deadlock, or a collective every
member entered), the stopped or silent process among them is one more piece of
evidence; without that, the finding names the smallest group that holds them.
Group membership comes from the ranks' beacons (`groups`: name -> dim, ranks)
and otherwise from the layout (dp, pp, cp, tp with TP innermost) and the
group's description in the flight recorder (`mesh_tp`, ...).
"""

from __future__ import annotations

import itertools
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from health.observations import RankObservation

MESH_DIMS = ("dp", "pp", "cp", "tp")
"""Mesh dimensions from outermost to innermost (the trainer's mesh order)."""


def mesh_groups(layout: Mapping[str, int]) -> dict[str, list[tuple[int, ...]]]:
    """The ranks of every group of each mesh dimension (and the flattened dp_cp), global rank order row-major."""
    shape = [int(layout.get(d, 1)) for d in MESH_DIMS]
    world = 1
    for n in shape:
        world *= n
    strides = [1] * 4
    for i in range(2, -1, -1):
        strides[i] = strides[i + 1] * shape[i + 1]

    def coords(rank: int) -> list[int]:
        return [(rank // strides[i]) % shape[i] for i in range(4)]

    out: dict[str, list[tuple[int, ...]]] = {}
    for name, dims in [*((d, (i,)) for i, d in enumerate(MESH_DIMS)), ("dp_cp", (0, 2))]:
        groups: dict[tuple[int, ...], list[int]] = {}
        for r in range(world):
            c = coords(r)
            key = tuple(c[i] for i in range(4) if i not in dims)
            groups.setdefault(key, []).append(r)
        out[name] = sorted(tuple(g) for g in groups.values())
    out["world"] = [tuple(range(world))]
    return out


@dataclass(frozen=True, slots=True)
class Wait:
    """One wait-for edge: `waiter` is blocked in `op` and waits for `on`."""

    waiter: int
    on: tuple[int, ...]
    kind: str
    """collective | recv | send"""
    where: str
    """The process group's dim and members, or the pipeline channel."""
    op: str
    seq: int
    strong: bool = True

    def describe(self) -> str:
        if self.kind == "collective":
            return f"{self.op} #{self.seq} on {self.where}"
        return f"pipeline {self.kind} #{self.seq} on channel {self.where}"


@dataclass(frozen=True, slots=True)
class Attribution:
    culprits: tuple[int, ...]
    certain: bool
    """False when the evidence cannot single out one rank; then `group` holds the candidates."""
    reason: str
    group: tuple[int, ...] = ()
    group_dim: str = ""
    waiting_in: Wait | None = None
    """The operation the culprit's direct waiters are blocked in."""
    chain: tuple[Wait, ...] = ()
    """From the farthest blocked rank to the culprit, one edge per hop."""
    direct: tuple[Wait, ...] = ()
    """Every distinct operation ranks wait in for the culprit(s) directly."""
    edges: tuple[Wait, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, object]:
        def w(x: Wait) -> dict[str, object]:
            return {"waiter": x.waiter, "on": list(x.on), "kind": x.kind, "where": x.where, "op": x.op,
                    "seq": x.seq, "strong": x.strong}

        return {"culprits": list(self.culprits), "certain": self.certain, "reason": self.reason,
                "group": list(self.group), "group_dim": self.group_dim,
                "waiting_in": w(self.waiting_in) if self.waiting_in else None, "chain": [w(x) for x in self.chain],
                "direct": [w(x) for x in self.direct]}


@dataclass(slots=True)
class _Groups:
    """Process group name -> (dim, members), and every known group's members for 'smallest group' answers."""

    by_name: dict[str, tuple[str, tuple[int, ...]]]
    all: list[tuple[str, tuple[int, ...]]]


def _groups(obs: Sequence[RankObservation], layout: Mapping[str, int] | None) -> _Groups:
    by_name: dict[str, tuple[str, tuple[int, ...]]] = {}
    for o in obs:
        for name, g in (o.groups or {}).items():
            by_name.setdefault(str(name), (str(g.get("dim", "")), tuple(sorted(int(r) for r in g.get("ranks", ())))))
    mesh = mesh_groups(layout) if layout else {}
    reporters: dict[str, set[int]] = {}
    descs: dict[str, tuple[str, int]] = {}
    for o in obs:
        for name, c in o.collectives.items():
            reporters.setdefault(name, set()).add(o.rank)
            descs.setdefault(name, (str(c.get("desc") or ""), o.rank))
    world = tuple(sorted({o.rank for o in obs} | set(itertools.chain.from_iterable(m for _, m in by_name.values()))))
    for name, ranks in reporters.items():
        if name in by_name:
            continue
        desc, r = descs[name]
        dim = desc.removeprefix("mesh_") if desc.startswith("mesh_") else ""
        if dim in mesh:
            members = next((g for g in mesh[dim] if r in g), tuple(sorted(ranks)))
            by_name[name] = (dim, members)
        elif desc == "default_pg":
            by_name[name] = ("world", mesh["world"][0] if mesh else world)
        else:
            by_name[name] = (desc if desc and desc != "undefined" else "", tuple(sorted(ranks)))
    known = {(d, m) for d, m in by_name.values()}
    for dim, gs in mesh.items():
        known.update((dim, g) for g in gs)
    known.add(("world", mesh["world"][0] if mesh else world))
    return _Groups(by_name, sorted(known, key=lambda x: (len(x[1]), x[0], x[1])))


def _where(dim: str, members: tuple[int, ...]) -> str:
    ranks = str(list(members)) if len(members) <= 16 else f"of {len(members)} ranks ({members[0]}..{members[-1]})"
    return f"{dim + ' ' if dim else ''}group {ranks}"


def wait_edges(obs: Sequence[RankObservation], layout: Mapping[str, int] | None = None
               ) -> tuple[list[Wait], dict[int, list[Wait]], _Groups]:
    """All wait-for edges, and per rank the collectives it is blocked in with every member present."""
    groups = _groups(obs, layout)
    by_rank = {o.rank: o for o in obs}
    edges: list[Wait] = []
    stuck: dict[int, list[Wait]] = {}
    wheres: dict[str, str] = {}
    behind: dict[tuple[str, int], tuple[int, ...]] = {}
    """(group, seq) -> members whose last enqueued collective there is below seq (one scan per pair)."""
    for o in obs:
        for name, c in o.collectives.items():
            seq, done = int(c.get("enqueued", -1)), int(c.get("completed", -1))
            if seq <= done:
                continue
            dim, members = groups.by_name.get(name, ("", (o.rank,)))
            if (name, seq) not in behind:
                behind[(name, seq)] = tuple(
                    m for m in members
                    if int((by_rank[m].collectives.get(name) or {}).get("enqueued", -1) if m in by_rank else -1) < seq)
            laggards = tuple(m for m in behind[(name, seq)] if m != o.rank)
            if name not in wheres:
                wheres[name] = _where(dim, members)
            w = Wait(o.rank, laggards, "collective", wheres[name], str(c.get("op") or "a collective"), seq)
            if laggards:
                edges.append(w)
            else:
                stuck.setdefault(o.rank, []).append(w)
    sends: dict[tuple[int, int, str], int] = {}
    recvs: dict[tuple[int, int, str], int] = {}
    for o in obs:
        for c in o.p2p:
            if c.get("role") == "send":
                sends[(o.rank, int(c["peer"]), str(c["chan"]))] = int(c.get("posted", 0))
            else:
                recvs[(int(c["peer"]), o.rank, str(c["chan"]))] = int(c.get("posted", 0))
    for o in obs:
        for c in o.p2p:
            peer, chan, posted = int(c["peer"]), str(c["chan"]), int(c.get("posted", 0))
            if c.get("role") == "recv":
                if posted > int(c.get("done", 0)) and sends.get((peer, o.rank, chan), 0) < posted:
                    edges.append(Wait(o.rank, (peer,), "recv", f"{chan} (from rank {peer})", "recv", posted))
            elif recvs.get((o.rank, peer, chan), 0) < posted:
                edges.append(Wait(o.rank, (peer,), "send", f"{chan} (to rank {peer})", "send",
                                  recvs.get((o.rank, peer, chan), 0) + 1, strong=False))
    return edges, stuck, groups


def _terminal_sccs(nodes: set[int], out: dict[int, set[int]]) -> list[set[int]]:
    """Strongly connected components among `nodes` that no edge leaves (Tarjan's algorithm, iterative)."""
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[int] = []
    comps: list[set[int]] = []
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(out.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            n, it = work[-1]
            m = next((x for x in it if x in nodes), None)
            if m is not None:
                if m not in index:
                    index[m] = low[m] = len(index)
                    stack.append(m)
                    on_stack.add(m)
                    work.append((m, iter(sorted(out.get(m, ())))))
                elif m in on_stack:
                    low[n] = min(low[n], index[m])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[n])
            if low[n] == index[n]:
                comp = set()
                while True:
                    x = stack.pop()
                    on_stack.discard(x)
                    comp.add(x)
                    if x == n:
                        break
                comps.append(comp)
    return [c for c in comps if all(m in c for n in c for m in out.get(n, ()))]


def attribute(obs: Sequence[RankObservation], layout: Mapping[str, int] | None = None,
              frozen: Sequence[int] = ()) -> Attribution:
    """Name the rank the hang waits for, or the smallest group that holds it."""
    edges, stuck, groups = wait_edges(obs, layout)
    strong_out: dict[int, set[int]] = {}
    for e in edges:
        if e.strong:
            strong_out.setdefault(e.waiter, set()).update(e.on)
    # A send that the receiver has not matched only counts when the receiver is not itself waiting for the sender.
    reach: dict[int, set[int]] = {}

    def reaches(a: int, b: int) -> bool:
        if a not in reach:
            seen, todo = {a}, [a]
            while todo:
                for m in strong_out.get(todo.pop(), ()):
                    if m not in seen:
                        seen.add(m)
                        todo.append(m)
            reach[a] = seen
        return b in reach[a]

    effective = [e for e in edges if e.strong or not reaches(e.on[0], e.waiter)]
    out: dict[int, set[int]] = {}
    for e in effective:
        out.setdefault(e.waiter, set()).update(e.on)
    frozen_set = set(frozen)
    waiters = set(out) | set(stuck)
    if not waiters:
        if frozen_set:
            c = tuple(sorted(frozen_set))
            return _finish(c, "no rank waits in a collective or a pipeline transfer; it stopped", groups, [], stuck)
        return Attribution((), False, "no rank waits in a collective or a pipeline transfer")
    seen, todo = set(waiters), deque(waiters)
    while todo:
        n = todo.popleft()
        for m in out.get(n, ()):
            if m not in seen:
                seen.add(m)
                todo.append(m)
    candidates = set().union(*_terminal_sccs(seen, out))
    idle = {c for c in candidates if c not in stuck and c not in out}
    if idle and len(idle) < len(candidates):
        candidates = idle
    reason = ""
    if len(candidates) > 1 and len(candidates & frozen_set) == 1:
        candidates &= frozen_set
        reason = "of the ranks the others wait for, only its process is stopped or silent"
    return _finish(tuple(sorted(candidates)), reason, groups, effective, stuck)


def _finish(culprits: tuple[int, ...], reason: str, groups: _Groups, edges: list[Wait],
            stuck: dict[int, list[Wait]]) -> Attribution:
    direct = [e for e in edges if set(e.on) & set(culprits) and e.waiter not in culprits]
    if not direct:
        direct = [w for c in culprits for w in stuck.get(c, [])]
    votes = Counter((e.kind, e.where, e.op, e.seq) for e in direct)
    waiting_in = None
    if votes:
        top = max(votes, key=lambda k: (votes[k], k[0] == "collective" or k[0] == "recv", k[3]))
        waiting_in = next(e for e in direct if (e.kind, e.where, e.op, e.seq) == top)
    chain = _chain(culprits, edges)
    distinct = tuple({(e.kind, e.where, e.op, e.seq): e for e in sorted(direct, key=lambda x: x.waiter)}.values())
    if len(culprits) == 1:
        if not reason:
            reason = _why(culprits[0], direct)
        return Attribution(culprits, True, reason, waiting_in=waiting_in, chain=chain, direct=distinct,
                           edges=tuple(edges))
    dim, members = next(((d, m) for d, m in groups.all if set(culprits) <= set(m)), ("", culprits))
    reason = (reason or f"the evidence cannot single out one of ranks {list(culprits)}: "
              f"they are in {_where(dim, members)}")
    return Attribution(culprits, False, reason, members, dim, waiting_in, chain, distinct, tuple(edges))


def _why(culprit: int, direct: list[Wait]) -> str:
    if not direct:
        return "the other ranks wait for it"
    e = max(direct, key=lambda x: (x.strong, x.kind == "collective", x.seq))
    if e.kind == "collective":
        return f"its collective sequence on {e.where} lags its peers' (rank {e.waiter} is at #{e.seq})"
    if e.kind == "recv":
        return f"it has not sent pipeline {e.where.split(' (')[0]} #{e.seq} that rank {e.waiter} waits for"
    return f"it has not posted the pipeline receive for rank {e.waiter}'s send on {e.where.split(' (')[0]}"


def _chain(culprits: tuple[int, ...], edges: list[Wait]) -> tuple[Wait, ...]:
    """The longest wait-for path that ends at a culprit (shortest hops per rank)."""
    into: dict[int, list[Wait]] = {}
    for e in edges:
        for t in e.on:
            into.setdefault(t, []).append(e)
    hop: dict[int, tuple[Wait, int]] = {}
    dist = {c: 0 for c in culprits}
    todo = deque(culprits)
    while todo:
        n = todo.popleft()
        for e in sorted(into.get(n, []), key=lambda x: (not x.strong, x.waiter)):
            if e.waiter not in dist:
                dist[e.waiter] = dist[n] + 1
                hop[e.waiter] = (e, n)
                todo.append(e.waiter)
    if len(dist) == len(culprits):
        return ()
    start = max(dist, key=lambda r: (dist[r], -r))
    path, n = [], start
    while n in hop:
        e, n = hop[n]
        path.append(e)
    return tuple(path)


def describe_chain(chain: Sequence[Wait]) -> str:
    return "; ".join(f"rank {e.waiter} waits in {e.describe()} for rank"
                     f"{'s' if len(e.on) > 1 else ''} {', '.join(map(str, e.on))}" for e in chain)
