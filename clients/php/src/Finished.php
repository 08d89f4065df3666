<?php

declare(strict_types=1);

namespace Warren;

/** `emit` or `progress` on a message whose handler already returned. */
class Finished extends StageError
{
}
