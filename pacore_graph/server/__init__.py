"""The OpenAI-compatible PaCoRe proxy: any OpenAI client gets PaCoRe reasoning (``pacore serve``).

A face of the package (see the design notes): it imports the core and the graphs, and nothing imports it.

::

    from pacore_graph.server import PaCoReProxy, ProxySettings

    async with VLLMClient("http://127.0.0.1:8000/v1") as upstream:
        async with PaCoReProxy(upstream, ProxySettings(port=8080)) as proxy:
            ...  # OpenAI(base_url=proxy.base_url).chat.completions.create(model="pacore-high", ...)
"""

from pacore_graph.server.app import PaCoReProxy, ProxySettings
from pacore_graph.server.protocol import ChatCompletionRequest, PaCoReOptions

__all__ = ["ChatCompletionRequest", "PaCoReOptions", "PaCoReProxy", "ProxySettings"]
