"""Routes of the tokenizer family (at the root, as vLLM serves them)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from concierge.gateway.http import direct
from concierge.gateway.tokenize import handler

router = APIRouter()


@router.post("/tokenize")
@direct
async def tokenize(request: Request) -> Response:
    return await handler.tokenize(request)


@router.post("/detokenize")
@direct
async def detokenize(request: Request) -> Response:
    return await handler.detokenize(request)
