"""Upscaling on another machine: ``live-upscale serve`` and the ``remote`` backend's link to it.

- ``wire``: the frame messages both sides exchange (a fixed header, then raw / PNG / JPEG pixels).
- ``client``: :class:`~live_upscale.remote.client.RemoteLink`, a background thread that keeps one
  session with a server alive (connects, reconnects, sends frames, collects results). It knows
  nothing of nodes: the ``remote`` backend (``backends/remote.py``) wraps it as an engine.
- ``server``: the ``serve`` command (aiohttp): one :class:`~live_upscale.nodes.UpscaleNode` per
  session. It sits at the host level (it imports nodes); ``wire`` and ``client`` sit at the
  backend level (they import only ``errors``).

The transport is a WebSocket per session (``/v1/session``) behind the small :class:`Transport`
interface in ``client``; why not WebRTC video tracks is measured by ``benchmarks/remote_stream.py``
and written up in the README section "Upscale on a cloud GPU from TouchDesigner".
"""
