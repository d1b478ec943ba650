"""URLs of the Django project the server tests run (ROOT_URLCONF for those tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt


def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse("Hello from Django")


@csrf_exempt
def echo(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {
            "method": request.method,
            "path": request.path,
            "script_name": request.META.get("SCRIPT_NAME", ""),
            "body": request.body.decode(),
            "query": request.GET.get("q", ""),
        }
    )


async def stream(request: HttpRequest) -> StreamingHttpResponse:
    async def parts() -> AsyncIterator[bytes]:
        for part in (b"a", b"b", b"c"):
            yield part

    return StreamingHttpResponse(parts())


urlpatterns = [
    path("hello/", hello),
    path("echo/", echo),
    path("stream/", stream),
]
