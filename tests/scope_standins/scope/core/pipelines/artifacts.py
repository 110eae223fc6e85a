"""Stand-in for ``scope.core.pipelines.artifacts``: the artifact models a config declares."""

from pydantic import BaseModel


class Artifact(BaseModel):
    pass


class HuggingfaceRepoArtifact(Artifact):
    repo_id: str
    files: list[str]


class GoogleDriveArtifact(Artifact):
    file_id: str
    files: list[str] | None = None
    name: str | None = None
