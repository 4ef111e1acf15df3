"""Wave stage: speed, direction and pattern of the predicted travelling waves."""
