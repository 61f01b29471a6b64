"""The workbench: runs on the donated computer (booted from a live USB stick), describes its
hardware, tests it, erases its drives (NIST SP 800-88 Rev. 1) and posts the evidence to
diagnostics over HTTP. Its own deployable: it imports nothing from `services/` or `shared/`;
what it posts are the services' public API contracts."""

TOOL_NAME = "greenit-workbench"
VERSION = "1.0.0"
