package com.amazonaws.services.lambda.runtime;

import java.util.Map;

/**
 * What a mobile client told about itself when it invoked the function.
 */
public interface ClientContext {

    /** The client application. */
    Client getClient();

    /** Custom values set by the client application. */
    Map<String, String> getCustom();

    /** Environment values set by the mobile SDK. */
    Map<String, String> getEnvironment();
}
