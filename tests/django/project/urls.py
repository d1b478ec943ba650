"""One view: the version the running process imported."""

from django.http import HttpRequest, HttpResponse
from django.urls import path

from project import version


def show_version(request: HttpRequest) -> HttpResponse:
    return HttpResponse(str(version.VERSION))


urlpatterns = [path("version/", show_version)]
