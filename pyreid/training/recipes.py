"""Published recipes: where each value of a shipped config comes from, in one place.

A shipped config that reproduces a published run carries a ``recipe:`` block
beside its settings (the training layer ignores it)::

    recipe:
      title: Cluster-Contrast, Market-1501 (ResNet-50, DBSCAN, momentum update)
      repository: github.com/alibaba/cluster-contrast-reid     # the files the sources name are in it
      result: 82.1 mAP / 92.3 rank-1
      result_source: Cluster-Contrast README.md, Results (figs/resultsv2.png), ResNet-50 DBSCAN row
      sources:
        batch_size: "README.md, Training, Market-1501 DBSCAN command: -b 256"
        options.eps: "README.md, Training, Market-1501 DBSCAN command: --eps 0.6"
        pretrained:
          published: v1                                  # only where pyreid's value differs
          source: "..."
      differences:
        - what still differs from the published run

``sources`` names run keys (``lr``) and the algorithm's options
(``options.eps``); a source is a text, or ``{published, source}`` where the
published value is not the config's (a known difference, shown as such).
Every value of a published config that differs from pyreid's defaults for
its algorithm has a source (the tests check it), ``pyreid config show NAME``
prints the resolved config with them, and docs/recipes.md's tables are
:func:`markdown` of the same files, so the three cannot drift apart.

Torch-free: it reads YAML and the option dataclasses only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from pyreid.training.config import (
    ConfigError,
    TrainConfig,
    build_dataclass,
    find_config,
    read_config_file,
    shipped_configs,
)

__all__ = ["Recipe", "Source", "load_recipe", "published_configs", "defaults", "show", "markdown", "RUN_KEYS"]

GENERATED = "generated: python -m pyreid.training.recipes"

# Where and how a run runs, not what it computes: never needs a source.
RUN_KEYS = frozenset({"algorithm", "dataset", "data_root", "source", "source_root", "target", "target_root", "out",
                      "resume", "device", "workers", "progress", "plots", "tensorboard", "on_bad_image",
                      "check_ranks", "test_batch_size"})


@dataclass
class Source:
    """Where a value comes from; ``published`` is set only where it differs from the config's."""

    text: str
    published: Any = None
    differs: bool = False


@dataclass
class Recipe:
    """A shipped config resolved as a run would resolve it, with the recipe block of its file."""

    name: str
    algorithm: str
    config: TrainConfig
    options: Any
    title: str = ""
    repository: str = ""
    result: str = ""
    result_source: str = ""
    sources: Dict[str, Source] = field(default_factory=dict)
    differences: List[str] = field(default_factory=list)

    @property
    def published(self) -> bool:
        return bool(self.title)

    def value(self, key: str) -> Any:
        """The resolved value of ``key`` (``options.NAME`` for an option)."""
        if key.startswith("options."):
            return getattr(self.options, key[len("options."):])
        return getattr(self.config, key)

    def keys(self) -> List[str]:
        """Every run key and option, in the dataclasses' order."""
        return ([f.name for f in dataclasses.fields(self.config)]
                + [f"options.{f.name}" for f in dataclasses.fields(self.options)])


def _spec(algorithm: str):
    from pyreid.algorithms import SPECS  # torch-free: the specs and option dataclasses only

    if algorithm not in SPECS:
        raise ConfigError(f"unknown algorithm '{algorithm}'; expected one of {', '.join(sorted(SPECS))}")
    return SPECS[algorithm]


def defaults(algorithm: str) -> Tuple[TrainConfig, Any]:
    """pyreid's defaults for ``algorithm``: TrainConfig's, the algorithm's own, its options'."""
    spec = _spec(algorithm)
    config = build_dataclass(TrainConfig, spec.defaults, {"algorithm": algorithm}, owner="config")
    return config, build_dataclass(spec.options, owner=f"{algorithm} options")


def load_recipe(name: str) -> Recipe:
    """The shipped config (or YAML file) ``name``, resolved without command-line flags, and its recipe block."""
    import yaml

    path = find_config(name)
    values, options = read_config_file(path)
    algorithm = values.pop("algorithm", None)
    if algorithm is None:
        raise ConfigError(f"config {path} names no algorithm")
    spec = _spec(algorithm)
    config = build_dataclass(TrainConfig, spec.defaults, values, {"algorithm": algorithm}, owner="config")
    opts = build_dataclass(spec.options, options, owner=f"{algorithm} options")
    with open(path) as f:
        block = (yaml.safe_load(f) or {}).get("recipe") or {}
    if not isinstance(block, dict):
        raise ConfigError(f"config {path}: 'recipe' must be a mapping")
    unknown = set(block) - {"title", "repository", "result", "result_source", "sources", "differences"}
    if unknown:
        raise ConfigError(f"config {path}: unknown recipe keys {sorted(unknown)}")
    recipe = Recipe(name, algorithm, config, opts, title=str(block.get("title", "")),
                    repository=str(block.get("repository", "")),
                    result=str(block.get("result", "")), result_source=str(block.get("result_source", "")),
                    differences=[str(d) for d in block.get("differences") or []])
    known = set(recipe.keys())
    for key, entry in (block.get("sources") or {}).items():
        if key not in known:
            raise ConfigError(f"config {path}: recipe source for unknown key '{key}'")
        if isinstance(entry, dict):
            if set(entry) != {"published", "source"}:
                raise ConfigError(f"config {path}: recipe source of '{key}' must be a text or {{published, source}}")
            recipe.sources[key] = Source(str(entry["source"]), entry["published"],
                                         differs=entry["published"] != recipe.value(key))
        else:
            recipe.sources[key] = Source(str(entry))
    return recipe


def published_configs() -> List[str]:
    """The shipped configs that carry a recipe block (published runs)."""
    return [name for name in shipped_configs() if load_recipe(name).published]


def _format(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_format(v) for v in value) + "]"
    return str(value)


def not_default(recipe: Recipe) -> List[str]:
    """Keys whose value differs from pyreid's defaults for the algorithm (run keys aside)."""
    config, options = defaults(recipe.algorithm)
    base = Recipe(recipe.name, recipe.algorithm, config, options)
    return [k for k in recipe.keys() if k not in RUN_KEYS and recipe.value(k) != base.value(k)]


def show(name: str) -> str:
    """The resolved config ``name`` as YAML-like lines, each sourced value with its source."""
    recipe = load_recipe(name)
    changed = set(not_default(recipe))
    lines = [f"# {recipe.name} ({recipe.algorithm})"]
    if recipe.published:
        lines.append(f"# published recipe: {recipe.title}; files named below are in {recipe.repository}")
        if recipe.result:
            lines.append(f"# published result: {recipe.result} ({recipe.result_source})")
        lines.append("# '# <- SOURCE': where a value comes from ('published X;' where pyreid's differs); "
                     "'# (default)': pyreid's default for the algorithm")
    else:
        lines.append("# not a published recipe: its values are pyreid's choices")

    def line(key: str, indent: str) -> str:
        shown = f"{indent}{key.split('.')[-1]}: {_format(recipe.value(key))}"
        source = recipe.sources.get(key)
        if source is not None:
            note = f"published {_format(source.published)}; " if source.differs else ""
            return f"{shown:<34} # <- {note}{source.text}"
        return f"{shown:<34} # {'set by this config' if key in changed else '(default)'}" if key not in RUN_KEYS \
            else shown

    keys = recipe.keys()
    lines += [line(k, "") for k in keys if not k.startswith("options.")]
    lines.append("options:")
    lines += [line(k, "  ") for k in keys if k.startswith("options.")]
    if recipe.differences:
        lines.append("# known differences from the published run:")
        lines += [f"#  - {d}" for d in recipe.differences]
    return "\n".join(lines)


def markdown(names: List[str]) -> str:
    """docs/recipes.md's table of the configs ``names`` (one algorithm): one row per sourced setting, one
    column per config, then the published results and the known differences."""
    recipes = [load_recipe(n) for n in names]
    algorithms = {r.algorithm for r in recipes}
    if len(algorithms) != 1:
        raise ValueError(f"markdown: one algorithm per table, got {sorted(algorithms)}")
    order = recipes[0].keys()
    keys = [k for k in order if any(k in r.sources for r in recipes)]
    header = "| setting | " + " | ".join(f"`{r.name}`" for r in recipes) + " | source |"
    rows = [header, "|" + "---|" * (len(recipes) + 2)]
    for key in keys:
        cells = []
        for r in recipes:
            value = f"{_format(r.value(key))}"
            source = r.sources.get(key)
            if source is not None and source.differs:
                value += f" (published {_format(source.published)})"
            cells.append(value)
        texts: List[str] = []
        for r in recipes:
            text = r.sources[key].text if key in r.sources else None
            if text and text not in texts:
                texts.append(text)
        rows.append(f"| `{key}` | " + " | ".join(cells) + " | " + "; ".join(texts).replace("|", "\\|") + " |")
    repositories = sorted({r.repository for r in recipes if r.repository})
    out = [f"Sources are files of {', '.join(repositories)}." if repositories else "", "", "\n".join(rows), "",
           "Published results, each of exactly its config's setting:", ""]
    out += [f"- `{r.name}`: {r.result or 'none published for this setting'}"
            + (f" ({r.result_source})" if r.result_source else "") for r in recipes]
    seen: Dict[str, List[str]] = {}
    for r in recipes:
        for d in r.differences:
            seen.setdefault(d, []).append(r.name)
    out += ["", "Known differences from the published runs:", ""]
    if not seen:
        out.append("- none known")
    for d, where in seen.items():
        scope = "" if len(where) == len(recipes) else " (" + ", ".join(f"`{w}`" for w in where) + ")"
        out.append(f"- {d}{scope}")
    return "\n".join(out)


def table_names() -> Dict[str, List[str]]:
    """docs/recipes.md's tables: the published configs grouped by algorithm, in the docs' order."""
    groups: Dict[str, List[str]] = {}
    for name in published_configs():
        groups.setdefault(load_recipe(name).algorithm, []).append(name)
    return groups


def _main(argv: Optional[List[str]] = None) -> int:
    """``python -m pyreid.training.recipes``: print every table of docs/recipes.md (to paste after a change)."""
    for algorithm, names in table_names().items():
        print(f"<!-- table: {algorithm} ({GENERATED}) -->")
        print(markdown(names))
        print(f"<!-- end table: {algorithm} -->\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
