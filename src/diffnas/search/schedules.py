"""When to take an alpha step: every iteration (DARTS), every f-th (static), or when the weights'
gradient signal is low (DARTS-PRIME's Fisher-informed dynamic schedule). Chosen by name from
`ALPHA_SCHEDULES`; each is built from the `[search]` config section.

A schedule is asked `take_alpha_step()` at the start of every iteration, and, if it
`needs_fisher`, told the trace of the empirical Fisher (the squared norm of the weight
gradient, before clipping) after every weight step via `observe(fisher_trace)`.
"""

from __future__ import annotations

from diffnas.registry import Registry

ALPHA_SCHEDULES: Registry = Registry("alpha-step schedule")


class _Schedule:
    """Shared bookkeeping: the number of iterations seen and alpha steps taken."""

    needs_fisher = False

    def __init__(self):
        self.iterations = 0
        self.alpha_steps = 0

    def _decide(self) -> bool:
        raise NotImplementedError

    def take_alpha_step(self) -> bool:
        """Whether this iteration takes an alpha step (counted when it does)."""
        take = self._decide()
        self.iterations += 1
        self.alpha_steps += int(take)
        return take

    def observe(self, fisher_trace: float) -> None:
        """The squared norm of this iteration's weight gradient (ignored by most schedules)."""

    def state_dict(self) -> dict:
        """The schedule's state, for exact resume."""
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        """Inverse of state_dict."""
        vars(self).update(state)


@ALPHA_SCHEDULES.register("every")
class EveryStep(_Schedule):
    """DARTS: one alpha step per weight step."""

    def __init__(self, cfg=None):
        super().__init__()

    def _decide(self) -> bool:
        return True


@ALPHA_SCHEDULES.register("static")
class StaticSchedule(_Schedule):
    """One alpha step every f-th iteration (`search.alpha_every`), starting with the first."""

    def __init__(self, cfg):
        super().__init__()
        self.every = cfg.alpha_every

    def _decide(self) -> bool:
        return self.iterations % self.every == 0


@ALPHA_SCHEDULES.register("fisher")
class FisherSchedule(_Schedule):
    """DARTS-PRIME's informed schedule. F is an EWMA of the weight gradient's squared norm,
    F <- lam * FI + (1 - lam) * F. At the start of an iteration: if 0 < F < tau, take an alpha
    step and tighten tau <- tau * m^(-f); otherwise loosen tau <- tau * m. With f =
    `search.alpha_every` this takes about one alpha step per f iterations."""

    needs_fisher = True

    def __init__(self, cfg):
        super().__init__()
        self.every = cfg.alpha_every
        self.lam = cfg.fisher_ewma
        self.tau = cfg.fisher_tau0
        self.m = cfg.fisher_factor
        self.fisher = 0.0

    def _decide(self) -> bool:
        if 0.0 < self.fisher < self.tau:
            self.tau *= self.m ** (-self.every)
            return True
        self.tau *= self.m
        return False

    def observe(self, fisher_trace: float) -> None:
        self.fisher = self.lam * fisher_trace + (1.0 - self.lam) * self.fisher
