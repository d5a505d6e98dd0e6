"""Reading Docker Compose projects: ``load_project(ProjectOptions(...))``."""

from compose_ckpt.compose.model import ComposeProject, ProjectOptions, ServiceConfig, ServiceDependency
from compose_ckpt.compose.resolve import load_project, start_loading

__all__ = ["ComposeProject", "ProjectOptions", "ServiceConfig", "ServiceDependency", "load_project", "start_loading"]
