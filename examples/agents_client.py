"""The OpenAI Agents SDK, with a function tool, against a compat_asgi endpoint.

The Agents SDK speaks the Responses API; compat_asgi gives it one in front of
a chat-completions backend. Start a server first, for instance the demo
backend (which calls a tool when the prompt names it, then answers from the
tool's result) or the proxy example in front of your own chat server:

    compat-asgi serve --port 8000
    COMPAT_BASE_URL=http://127.0.0.1:8000/v1 python examples/agents_client.py

    COMPAT_UPSTREAM=http://127.0.0.1:8080/v1 PORT=9000 python examples/proxy.py
    COMPAT_BASE_URL=http://127.0.0.1:9000/v1 COMPAT_MODEL=my-model python examples/agents_client.py

Environment: ``COMPAT_BASE_URL`` (default ``http://127.0.0.1:8000/v1``),
``COMPAT_API_KEY`` (if the server wants one), ``COMPAT_MODEL`` (default
``demo``). Tracing is disabled: it would upload traces to api.openai.com.
"""

from __future__ import annotations

import asyncio
import os
import sys

from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
from openai import AsyncOpenAI

PROMPT = "Use get_weather to find the weather in Paris."


@function_tool
def get_weather(city: str) -> str:
    """The current weather in a city.

    Args:
        city: The city's name, e.g. Paris.
    """
    return f"sunny, 21 C in {city}"


async def ask(base_url: str, prompt: str = PROMPT, *, model: str = "demo", api_key: str = "unused") -> str:
    """Run the agent once; its final answer."""
    set_tracing_disabled(True)
    client = AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=60)
    agent = Agent(
        name="Weather assistant",
        instructions="Answer weather questions with the get_weather tool.",
        tools=[get_weather],
        model=OpenAIResponsesModel(model=model, openai_client=client),
    )
    try:
        result = await Runner.run(agent, prompt)
    finally:
        await client.close()
    return str(result.final_output)


def main() -> None:
    base_url = os.environ.get("COMPAT_BASE_URL", "http://127.0.0.1:8000/v1")
    prompt = " ".join(sys.argv[1:]) or PROMPT
    answer = asyncio.run(
        ask(
            base_url,
            prompt,
            model=os.environ.get("COMPAT_MODEL", "demo"),
            api_key=os.environ.get("COMPAT_API_KEY", "unused"),
        )
    )
    print(answer)


if __name__ == "__main__":
    main()
