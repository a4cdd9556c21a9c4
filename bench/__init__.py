"""softkvm's benchmark: ``python -m bench`` (``make bench``) writes bench/results/."""
