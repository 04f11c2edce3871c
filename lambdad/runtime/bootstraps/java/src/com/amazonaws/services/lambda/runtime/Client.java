package com.amazonaws.services.lambda.runtime;

/**
 * The client application that invoked the function.
 */
public interface Client {

    /** The installation id of the application. */
    String getInstallationId();

    /** The title of the application. */
    String getAppTitle();

    /** The version name of the application. */
    String getAppVersionName();

    /** The version code of the application. */
    String getAppVersionCode();

    /** The package name of the application. */
    String getAppPackageName();
}
