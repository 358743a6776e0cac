"""Reading records into the leaderboard, the plots, the HTML page and the README's tables. Torch-free."""
