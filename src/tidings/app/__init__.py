"""The application layer: typed subscribers and publishing over any broker, with the contract enforced."""

from tidings.app.application import App, CallNext, EventContext, Incoming, Middleware, Subscriber
from tidings.app.contract import Contract, ContractError, load_contract

__all__ = [
    "App",
    "CallNext",
    "Contract",
    "ContractError",
    "EventContext",
    "Incoming",
    "Middleware",
    "Subscriber",
    "load_contract",
]
