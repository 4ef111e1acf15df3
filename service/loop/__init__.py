"""The closed loop: hands predictions to the wave stage, the policy and the bridge, and scores
them live."""
