"""What Jinja builds inline, measured: before code generation a template's tree is rewritten so
that list, tuple and dict literals, ``~``, slices and each ``{% for %}`` loop's iterable pass
through internal filters that charge what they make to the template's budget.

(Jinja compiles these to plain Python, so no hook of the sandbox sees them.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jinja2 import nodes, pass_context
from jinja2.runtime import Context, Undefined
from jinja2.visitor import NodeTransformer

from pgactions.render.bounds import bounded, current_budget

__all__ = ["INLINE_FILTERS", "MeasureInline"]

_MADE, _CONCAT, _LOOP = "_pgactions_made", "_pgactions_concat", "_pgactions_loop"


class MeasureInline(NodeTransformer):
    """Rewrites a template's tree so that what Jinja builds inline is measured too: list, tuple and
    dict literals, ``~``, slices, and each ``{% for %}`` loop's iterable."""

    def __init__(self, env: Any) -> None:
        self.env = env

    def _through(self, node: Any, name: str, *args: Any) -> nodes.Expr:
        wrapped = nodes.Filter(node, name, [nodes.Const(a) for a in args], [], None, None, lineno=node.lineno)
        wrapped.set_environment(self.env)
        return wrapped

    def _constant(self, node: Any) -> bool:
        try:
            node.as_const(nodes.EvalContext(self.env))
        except Exception:  # Impossible, or an error to report at run time
            return False
        return True

    def _literal(self, node: Any) -> Any:
        self.generic_visit(node)
        if getattr(node, "ctx", "load") != "load" or self._constant(node):
            return node
        return self._through(node, _MADE)

    visit_List = visit_Tuple = visit_Dict = _literal

    def visit_Concat(self, node: nodes.Concat) -> Any:
        self.generic_visit(node)
        if self._constant(node):
            return node
        return self._through(nodes.Tuple(node.nodes, "load", lineno=node.lineno), _CONCAT)

    def visit_Getitem(self, node: nodes.Getitem) -> Any:
        self.generic_visit(node)
        if node.ctx == "load" and isinstance(node.arg, nodes.Slice):
            return self._through(node, _MADE)
        return node

    def visit_For(self, node: nodes.For) -> Any:
        self.generic_visit(node)
        # Each step may write the loop body's literal text into a buffer (a macro, {% set %}), and
        # a body that uses `loop` may make Jinja hold all the items (loop.length): charge them.
        text = sum(len(data.data) for child in node.body for data in child.find_all(nodes.TemplateData))
        uses_loop = any(name.name == "loop" for child in node.body for name in child.find_all(nodes.Name))
        node.iter = self._through(node.iter, _LOOP, text + (8 if uses_loop else 0))
        return node


# -- the internal filters the rewritten tree calls ------------------------------------------------


@pass_context
def _made_filter(context: Context, value: Any) -> Any:
    return current_budget().made(value)


@pass_context
def _concat_filter(context: Context, parts: tuple[Any, ...]) -> str:
    budget = current_budget()
    budget.tick()
    budget.check(sum(budget.text_weight(p) for p in parts))
    return budget.made("".join([p if isinstance(p, str) else str(p) for p in parts]))


@pass_context
def _loop_filter(context: Context, iterable: Any, per_step: int = 0) -> Any:
    if isinstance(iterable, Undefined):
        return iterable
    return bounded(current_budget(), iterable, per_step)


#: The filters the rewritten tree names, for the environment to register (render/sandbox.py).
INLINE_FILTERS: dict[str, Callable[..., Any]] = {_MADE: _made_filter, _CONCAT: _concat_filter,
                                                  _LOOP: _loop_filter}
