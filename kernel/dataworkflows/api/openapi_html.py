"""``/api/v1/docs``: the OpenAPI document as one plain HTML page (no scripts, no assets)."""

from __future__ import annotations

import html
import json
from typing import Any

_CSS = """
body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}
h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
.op{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;margin:1em 0}
.method{font-weight:bold;display:inline-block;min-width:4.5em}
code,pre{background:#f6f6f6;border-radius:4px}pre{padding:.6em;overflow-x:auto}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.2em .5em;text-align:left}
"""


def _resolve(document: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    ref = item.get("$ref")
    if not ref:
        return item
    node: Any = document
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return dict(node)


def _schema_name(schema: dict[str, Any]) -> str:
    ref = schema.get("$ref", "")
    return ref.rsplit("/", 1)[-1] if ref else schema.get("type", "")


def render_html(document: dict[str, Any]) -> str:
    """A self-contained HTML reference of ``document`` (no scripts, no external assets)."""
    e = html.escape
    out = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{e(document['info']['title'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(document['info']['title'])} <small>{e(document['info']['version'])}</small></h1>",
        f"<p>{e(document['info']['description'])}</p>",
        "<p>Machine-readable: <a href='/api/v1/openapi.json'>/api/v1/openapi.json</a></p>",
    ]
    schemas = document["components"]["schemas"]
    for tag in document["tags"]:
        ops = [
            (path, method, op)
            for path, item in document["paths"].items()
            for method, op in item.items()
            if op["tags"][0] == tag["name"]
        ]
        if not ops:
            continue
        out.append(f"<h2 id='{e(tag['name'])}'>{e(tag['name'])}</h2>")
        out.append(f"<p>{e(tag['description'])}</p>")
        for path, method, op in ops:
            out.append(f"<div class='op' id='{e(op['operationId'])}'>")
            out.append(
                f"<p><span class='method'>{e(method.upper())}</span> <code>{e(path)}</code>"
                f" — {e(op['summary'])}</p>"
            )
            if op.get("x-required-role"):
                out.append(f"<p>Needs: <code>{e(op['x-required-role'])}</code></p>")
            if op.get("description"):
                out.append(f"<p>{e(op['description'])}</p>")
            params = [_resolve(document, p) for p in op.get("parameters", [])]
            if params:
                out.append("<table><tr><th>parameter</th><th>in</th><th>description</th></tr>")
                for p in params:
                    out.append(
                        f"<tr><td><code>{e(p['name'])}</code></td><td>{e(p['in'])}</td>"
                        f"<td>{e(p.get('description', ''))}</td></tr>"
                    )
                out.append("</table>")
            body = op.get("requestBody")
            if body:
                schema = next(iter(body["content"].values()))["schema"]
                name = _schema_name(schema)
                out.append(f"<p>Body: <code>{e(name)}</code></p>")
                example = schemas.get(name, {}).get("example")
                if example is not None:
                    out.append(f"<pre>{e(json.dumps(example, indent=2))}</pre>")
            out.append("<p>Responses: ")
            out.append(
                ", ".join(
                    f"<code>{e(status)}</code> {e(resp.get('description', ''))}"
                    for status, resp in op["responses"].items()
                )
            )
            out.append("</p></div>")
    out.append("<h2>Schemas</h2>")
    for name, schema in schemas.items():
        out.append(f"<h3 id='schema-{e(name)}'>{e(name)}</h3>")
        shown = {k: v for k, v in schema.items() if k != "example"}
        out.append(f"<pre>{e(json.dumps(shown, indent=2))}</pre>")
    out.append("</body></html>")
    return "\n".join(out)
