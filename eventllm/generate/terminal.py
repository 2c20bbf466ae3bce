"""The terminal around a generation session: one prompt continued, prompts piped on standard input as turns, or an
interactive chat; replies streamed token by token with a live status (sparsity, energy, latency) on a terminal."""

from __future__ import annotations

import sys

from eventllm.generate.session import Session


def status(st) -> str:
    """One token's figures, as the live status and the per-reply line show them."""
    text = f"{100 * st.sparsity:.0f}% sparse"
    if st.energy_j is not None:
        text += f" · {st.energy_j * 1e6:.1f} µJ · {st.latency_s * 1e6:.0f} µs"
    return text


class Terminal:
    """Streams a session's replies to stdout (the prompts' echo and the per-reply figures to stderr)."""

    def __init__(self, session: Session, quiet: bool = False):
        self.session, self.quiet = session, quiet
        self.live = sys.stdout.isatty() and not quiet  # a dim status after the cursor, erased before the next piece
        self.shown = False

    def _on_token(self, st) -> None:
        if self.live:
            sys.stdout.write(f"  \x1b[2m⟨{status(st)}⟩\x1b[0m\x1b[{len(status(st)) + 4}D")
            sys.stdout.flush()
            self.shown = True

    def turn(self, prompt: str, echo: bool) -> None:
        """Feed `prompt` and stream the reply: after the prompt itself (`echo`, one prompt continued) or after "model> "."""
        sys.stdout.write(prompt if echo else "model> ")
        for piece in self.session.reply(prompt, self._on_token):
            if self.shown:
                sys.stdout.write("\x1b[K")
            sys.stdout.write(piece)
            sys.stdout.flush()
        if self.shown:
            sys.stdout.write("\x1b[K")
        sys.stdout.write("\n")
        st = self.session.stats[-1] if self.session.stats else None
        if st is not None and not self.quiet:
            print(f"[{len(self.session.turns[-1].reply_ids)} tokens · last token {status(st)}]", file=sys.stderr)
        sys.stdout.flush()

    def run(self, prompt: str | None) -> None:
        """One prompt; else an interactive session on a terminal, or one turn per line piped on stdin. Ctrl-C ends it
        (the caller prints the summary)."""
        try:
            if prompt:
                self.turn(prompt, echo=True)
            elif sys.stdin.isatty():
                print("Type a prompt and press Enter; Ctrl-D or Ctrl-C ends the session.", file=sys.stderr)
                while True:
                    try:
                        line = input("you> ")
                    except EOFError:
                        print()
                        break
                    if line.strip():
                        self.turn(line, echo=False)
            else:
                for line in sys.stdin:
                    if line.strip():
                        sys.stdout.write(f"you> {line.rstrip()}\n")
                        self.turn(line.rstrip("\n"), echo=False)
        except KeyboardInterrupt:
            sys.stdout.write("\x1b[K\n(interrupted)\n" if self.live else "\n(interrupted)\n")
