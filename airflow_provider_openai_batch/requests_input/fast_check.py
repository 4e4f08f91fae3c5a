"""The fast accept check for request lines read from a file, which :class:`.validation.RequestChecker` tries first:
msgspec decodes only the fields the check reads and checks the JSON syntax of the rest without building it, which
costs far less than a full parse. A skipped string is not decoded, so its UTF-8 is not checked by the decoder: the
caller checks UTF-8 once per read chunk. Once the input's model is known, a whole chunk is decoded at once
(:class:`ChunkFit`) against a type that only valid requests fit. A line that does not pass is parsed in full and
diagnosed by the checker, so the problems named are the same. The one difference: a number beyond a double's range
(``1e400``) in a field this check does not read passes here, where a full parse refuses it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec


# Every struct here is gc=False: decoded JSON holds no reference cycles, and a chunk decodes about a thousand of
# them, which as tracked objects set off a garbage collection every 700 or so (7% of the spool's time, measured).
class _Fields(msgspec.Struct, gc=False):
    """The body fields the accept check reads; a missing one, like JSON null, is None (as ``dict.get``)."""

    model: Any = None
    response_format: Any = None
    text: Any = None


class _EmbeddingsFields(_Fields):
    input: Any = None


class _Head(msgspec.Struct, gc=False):
    """The request fields the accept check reads; the rest of the line is checked for JSON syntax, not built."""

    custom_id: Any = None
    method: Any = None
    url: Any = None
    body: _Fields | None = None


class _EmbeddingsHead(_Head):
    body: _EmbeddingsFields | None = None


class _PlainFormat(msgspec.Struct, tag_field="type", tag="text", gc=False):
    """A ``response_format`` asking for plain text; its other fields are not read."""


class _JsonObjectFormat(msgspec.Struct, tag_field="type", tag="json_object", gc=False):
    """A ``response_format`` asking for any JSON object: no schema to check."""


# Made at import: msgspec resolves the string annotations of these types in their module when a decoder is made.
_HEAD_DECODERS: dict[bool, msgspec.json.Decoder[Any]] = {
    False: msgspec.json.Decoder(_Head),
    True: msgspec.json.Decoder(_EmbeddingsHead),
}


def head_decoder(embeddings: bool) -> msgspec.json.Decoder[Any]:
    """The decoder of one line's checked fields (with ``body.input`` on ``/v1/embeddings``)."""
    return _HEAD_DECODERS[embeddings]


class ChunkFit:
    """Read chunks decoded whole against types that only accepted requests of one model fit.

    On an endpoint of structured output a chunk is first decoded against a type whose bodies ask for none (no
    ``text``, a ``response_format`` of type ``text`` or ``json_object``), so no line needs a look of its own. Once a
    chunk does not fit it, the rest of the input takes the general type, and each body asking for a schema has the
    schema checked.

    :param endpoint: the batch endpoint; every ``url`` must equal it.
    :param model: the input's model.
    :param model_optional: a body may leave the model out.
    :param structured: bodies on this endpoint may ask for structured output.
    """

    def __init__(self, endpoint: str, model: str, model_optional: bool, structured: bool) -> None:
        self.model = model
        self.structured = structured
        # No chunk has yet missed the decoder of bodies asking for no structured output.
        self._plain = structured
        literal: Any = Literal[model]
        model_field = ("model", literal | None, None) if model_optional else ("model", literal)
        decoders = []
        for response_format, text in ((_PlainFormat | _JsonObjectFormat | None, None), (Any, Any)):
            body = msgspec.defstruct(
                "AcceptedBody",
                [model_field, ("response_format", response_format, None), ("text", text, None)],
                gc=False,
            )
            request = msgspec.defstruct(
                "AcceptedRequest",
                [
                    ("custom_id", Annotated[str, msgspec.Meta(min_length=1)]),
                    ("method", Literal["POST"]),
                    ("url", Literal[endpoint]),
                    ("body", body),
                ],
                gc=False,
            )
            decoders.append(msgspec.json.Decoder(request))
        self._plain_decoder, self._general_decoder = decoders

    def ids(
        self, region: Any, count: int, strict_problem: Callable[[dict[str, Any]], Any]
    ) -> list[str] | None:
        """The ``custom_id`` of every line of ``region`` if all ``count`` fit and pass ``strict_problem`` (which
        returns None for a body whose schema OpenAI's strict mode takes); else None."""
        if self._plain:
            reqs = _decode(self._plain_decoder, region, count)
            if reqs is not None:
                return [req.custom_id for req in reqs]
            self._plain = False
        reqs = _decode(self._general_decoder, region, count)
        if reqs is None:
            return None
        if self.structured:
            for req in reqs:
                body = req.body
                rf = body.response_format
                if body.text is not None or (type(rf) is dict and rf.get("type") == "json_schema"):
                    # A body may ask for strict structured output: its schema is then checked.
                    if strict_problem({"response_format": rf, "text": body.text}) is not None:
                        return None
        return [req.custom_id for req in reqs]


def _decode(decoder: Any, region: Any, count: int) -> list[Any] | None:
    """Every line of ``region`` decoded, if all ``count`` of them fit ``decoder``; else None."""
    try:
        reqs: list[Any] = decoder.decode_lines(region)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    if len(reqs) != count:  # a blank line, which decode_lines skips and the checker records
        return None
    return reqs
