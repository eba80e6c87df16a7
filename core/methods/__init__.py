"""Methods behind one registry; importing this package registers every method module."""
from core.methods import d3m, dfr, erm, groupdro, jtt, random_removal, rwg, subg, user  # noqa: F401  (registration)
from core.methods import pgd, ffw, ba_lora  # noqa: F401,I001  (registered after the others: D3M stays first)
from core.methods.base import METHODS, Method, MethodContext, MethodResult, get_method, register

__all__ = ["METHODS", "Method", "MethodContext", "MethodResult", "get_method", "register"]
