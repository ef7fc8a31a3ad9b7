"""The commands that show a run to people: serve (the HTTP API and the attention explorer,
on the loopback by default), explore (the explorer for one sentence as one offline HTML
file) and export (the model for an inference engine). Only they load http.server.
"""

from __future__ import annotations

from ..serving.explorer_page import explore as write_explorer_page
from ..serving.export import export_ctranslate2
from ..serving.server import serve as run_server


def serve(args) -> int:
    return run_server(args.run_dir, args.checkpoint, args.host, args.port, args.device)


def explore(args) -> int:
    out = write_explorer_page(args.run_dir, args.sentence, args.out, compare=args.compare,
                              beam=args.beam, device=args.device)
    print(out)
    return 0


def export(args) -> int:
    out = export_ctranslate2(args.run_dir, args.out, args.quantization, args.checkpoint,
                             args.overwrite)
    print(out)
    return 0
