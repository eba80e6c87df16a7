"""Methods behind one explicit, ordered registry: importing this package registers every
method module, then orders METHODS as ORDER says (the pages and `d3m methods` list them so)."""
from core.methods import d3m, dfr, erm, groupdro, jtt, random_removal, rwg, subg, user  # noqa: F401  (registration)
from core.methods import ba_lora, ffw, pgd  # noqa: F401  (registration)
from core.methods.base import BASELINE, CONTROL, METHODS, Method, MethodContext, MethodResult, get_method, register

ORDER = ("d3m", "auto_d3m", "subg", "dfr", "erm", "groupdro", "jtt", "random", "rwg", "flagged", "subpopulations",
         "pgd", "ffw", "ba_lora", "lora")
DEFAULT_METHOD = ORDER[0]  # D3M: what `d3m pipeline`, a study and the Debias page start with
if set(ORDER) != set(METHODS):
    raise ImportError(f"core.methods.ORDER and the registered methods differ: {sorted(set(ORDER) ^ set(METHODS))}")
_registered = dict(METHODS)
METHODS.clear()
METHODS.update((name, _registered[name]) for name in ORDER)

__all__ = ["BASELINE", "CONTROL", "DEFAULT_METHOD", "METHODS", "ORDER", "Method", "MethodContext", "MethodResult", "get_method",
           "register"]
