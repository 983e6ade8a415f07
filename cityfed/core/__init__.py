"""Pure numerics: sufficient statistics, scaling, exact solvers, metrics (numpy and scipy only)."""
