//! Session actors, the agent loop, tools and hooks.
