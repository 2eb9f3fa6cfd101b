import pacore_graph
import pacore_graph.testing


def isort_style(name: str) -> tuple[int, str]:
    """Constants, then classes, then functions: the order ruff's RUF022 keeps."""
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_all_is_sorted_and_complete():
    for module in (pacore_graph, pacore_graph.testing):
        exported = module.__all__
        assert exported == sorted(exported, key=isort_style), module.__name__
        for name in exported:
            assert hasattr(module, name), f"{module.__name__}.{name}"
            assert getattr(module, name).__doc__ or name.isupper(), f"{name} has no docstring"


def test_no_top_level_graphs_or_tools_leak():
    import importlib.util

    import pacore_graph.graphs
    import pacore_graph.tools

    assert pacore_graph.graphs.__name__ == "pacore_graph.graphs"
    for name in ("graphs", "tools"):
        spec = importlib.util.find_spec(name)
        assert spec is None or "site-packages" not in str(spec.origin), f"top-level {name} leaked"
