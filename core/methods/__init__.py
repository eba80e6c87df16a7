"""Methods behind one registry; importing this package registers every method module."""
from core.methods import (  # noqa: F401  (registration)
    ba_lora, d3m, dfr, erm, ffw, groupdro, jtt, pgd, random_removal, rwg, subg, user)
from core.methods.base import METHODS, Method, MethodContext, MethodResult, get_method, register

__all__ = ["METHODS", "Method", "MethodContext", "MethodResult", "get_method", "register"]
