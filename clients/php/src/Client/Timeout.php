<?php

declare(strict_types=1);

namespace Warren\Client;

/** The call's time limit passed (`wait`: the job did not settle; `body`
 *  holds its last state). */
class Timeout extends ClientError
{
}
