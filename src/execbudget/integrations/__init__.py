"""
Framework integrations, each importable on its own (its framework is an optional extra):

* ``execbudget.integrations.tenacity`` — stop, retry and before-attempt hooks.
* ``execbudget.integrations.langgraph`` — LangChain callbacks that hold every model call
  and charge every tool call, plus a graph wrapper for steps and ``Send`` fan-out.
* ``execbudget.integrations.openai_agents`` — a run-hook/model-provider pair for the
  OpenAI Agents SDK.
* ``execbudget.integrations.pydantic_ai`` — a ``WrapperModel`` that holds before every
  request, so an agent and its delegates share one budget.

See docs/integrations.md.
"""

from __future__ import annotations


def missing(framework: str, extra: str = "integrations") -> ImportError:
    """The ImportError raised when an integration's framework is not installed."""
    return ImportError(
        f"execbudget's {framework} integration needs {framework}; install it with "
        f'pip install "execbudget[{extra}]"'
    )
