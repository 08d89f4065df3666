<?php

declare(strict_types=1);

namespace Warren\Client;

/** The server refused the request (a 4xx other than 429): resending it
 *  will not help. `body['lines']` names the bad lines of a batch. */
class Refused extends ClientError
{
}
