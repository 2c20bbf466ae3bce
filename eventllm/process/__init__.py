"""The event-driven process graph (Lava style). numpy only: importing it never imports torch."""
